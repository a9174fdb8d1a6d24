"""Backbone weights from local ``.npz`` files, and conversion of pretrained ResNet weights.

File format: one array per variable, keyed ``"<layer_name>/<weight_name>"`` (e.g.
``"stage2_block1_conv1/kernel"``, ``"stem_bn/gamma"``, ``"stem_bn/moving_mean"``), convolution
kernels in Keras ``(H, W, in, out)`` layout. Pretrained weights are converted once from what the
user has, then loaded with :func:`load_backbone_weights`:

* a torchvision ``resnet50`` ``state_dict`` file (:func:`convert_torchvision_resnet`);
* a keras-hub ResNet preset (``resnet_18_imagenet``, ``resnet_50_imagenet``,
  ``resnet_101_imagenet``), by handle or local folder (:func:`convert_keras_hub_resnet`, or
  :func:`load_keras_hub_resnet` straight into a built backbone). keras-hub's ResNet (v1.5: the
  stride on the 3x3 convolution, PyTorch-style symmetric padding) has no dilation; dilation
  changes no weight, so its weights load into every output stride of
  :func:`~mtl_keras.backbones.resnet.build_resnet`, and the undilated one (output stride 32)
  computes keras-hub's ``pyramid_outputs``.

Only a keras-hub *handle* downloads (keras-hub fetches it from Kaggle); a local folder written by
``save_to_preset`` and the ``.npz`` files load offline. A recipe's ``backbone_weights`` names such
a local folder or ``.npz`` (:func:`resnet_weights_kind`, :func:`load_resnet_weights`): the run
builds its ResNet with them before the architecture takes it (``training.building``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping

import keras
import numpy as np

from mtl_keras.backbones.keras_hub import _affine, _keras_hub, _preset_normalization
from mtl_keras.backbones.resnet import RESNET_SPECS

_TORCH_BN = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}


def _weight_key(layer: keras.Layer, variable) -> str:
    """``"<layer_name>/<weight_name>"``, keeping sub-layer names of composite layers."""
    parts = variable.path.split("/")
    if layer.name in parts:
        return "/".join(parts[parts.index(layer.name) :])
    return f"{layer.name}/{variable.name}"


def backbone_variables(backbone: keras.Model) -> dict[str, keras.Variable]:
    """All variables of ``backbone`` (trainable and not) by their file key."""
    variables: dict[str, keras.Variable] = {}
    for layer in backbone.layers:
        for variable in layer.weights:
            key = _weight_key(layer, variable)
            if key in variables:
                raise ValueError(
                    f"two variables of model {backbone.name!r} share the key {key!r}; give its "
                    "layers unique names"
                )
            variables[key] = variable
    return variables


def _write_npz(arrays: Mapping[str, np.ndarray], path: str) -> None:
    """Write ``arrays`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_backbone_weights(backbone: keras.Model, path: str) -> None:
    """Save every variable of ``backbone`` to the ``.npz`` file ``path`` (written atomically)."""
    arrays = {
        k: np.asarray(keras.ops.convert_to_numpy(v))
        for k, v in backbone_variables(backbone).items()
    }
    _write_npz(arrays, path)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ValueError(
            f"backbone weights file {path!r} does not exist; pass the path of a .npz "
            "written by save_backbone_weights or convert_torchvision_resnet"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ValueError(
            f"backbone weights file {path!r} is not a readable .npz archive ({e}); re-create it "
            "with save_backbone_weights or convert_torchvision_resnet"
        ) from e


def load_backbone_weights(
    backbone: keras.Model, path: str, *, skip_mismatch: bool = False
) -> list[str]:
    """Load a ``.npz`` written by :func:`save_backbone_weights` into ``backbone``.

    Every key and shape is checked before anything is assigned, so a failed load leaves the
    backbone unchanged.

    Args:
        backbone: the built backbone (its layer names must match the file's keys).
        path: the ``.npz`` file.
        skip_mismatch: load what matches and skip missing, unexpected and mis-shaped keys
            instead of raising.

    Returns:
        The skipped keys, sorted (empty unless ``skip_mismatch``).

    Raises:
        ValueError: the file is missing or not an ``.npz``, or (without ``skip_mismatch``) a key
            is missing, unexpected or has the wrong shape; the message names path, key and shapes.

    Example:
        >>> save_backbone_weights(model, "/tmp/resnet18.npz")          # doctest: +SKIP
        >>> load_backbone_weights(fresh_model, "/tmp/resnet18.npz")    # doctest: +SKIP
        []
    """
    return _assign(backbone, _read_npz(path), f"backbone weights file {path!r}", skip_mismatch)


def _assign(
    backbone: keras.Model, arrays: Mapping[str, np.ndarray], source: str, skip_mismatch: bool
) -> list[str]:
    """Check every key and shape of ``arrays`` against ``backbone``, then assign them.

    ``source`` names where the arrays come from in the error message. Returns the skipped keys.
    """
    variables = backbone_variables(backbone)
    problems: dict[str, str] = {}  # in model order, then the file's unexpected keys
    for key, variable in variables.items():
        expected = tuple(variable.shape)
        if key not in arrays:
            problems[key] = f"missing from the file (model expects shape {expected})"
        elif tuple(arrays[key].shape) != expected:
            found = tuple(arrays[key].shape)
            problems[key] = f"shape mismatch: model expects {expected}, file has {found}"
    for key in sorted(arrays.keys() - variables.keys()):
        problems[key] = f"unexpected: not a variable of the model (file shape {arrays[key].shape})"
    if problems and not skip_mismatch:
        listed = "\n".join(f"  {k}: {msg}" for k, msg in list(problems.items())[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(
            f"{source} does not match model {backbone.name!r} "
            f"({len(problems)} problem(s)):\n{listed}{more}\nBuild the backbone with the same "
            "depth/width as the file, or pass skip_mismatch=True to load only what matches."
        )
    for key, variable in variables.items():
        if key not in problems:
            variable.assign(arrays[key].astype(variable.dtype))
    return sorted(problems)


def torchvision_resnet_to_keras(
    state_dict: Mapping[str, np.ndarray], depth: int
) -> dict[str, np.ndarray]:
    """Map a torchvision ResNet ``state_dict`` (numpy arrays) to this package's weight keys.

    ``conv1`` / ``bn1`` become ``stem_conv`` / ``stem_bn``; ``layer{s}.{i}.conv{k}`` /
    ``.bn{k}`` become ``stage{s}_block{i+1}_conv{k}`` / ``_bn{k}``; ``.downsample.0`` / ``.1``
    become ``_shortcut_conv`` / ``_shortcut_bn``. Kernels go from ``(out, in, H, W)`` to
    ``(H, W, in, out)``. The classifier (``fc.*``) and ``num_batches_tracked`` are dropped.

    Args:
        state_dict: parameter name -> array, as ``{k: v.numpy() for k, v in sd.items()}``.
        depth: 18, 34, 50 or 101.

    Returns:
        ``{"<layer_name>/<weight_name>": array}`` as stored in a weights ``.npz``.

    Raises:
        ValueError: unsupported depth, or keys missing from / unknown to that depth's layout.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(
            f"unsupported ResNet depth {depth!r}; valid depths: {sorted(RESNET_SPECS)}"
        )
    blocks, kind = RESNET_SPECS[depth]
    n_convs = 2 if kind == "basic" else 3

    # torch module prefix -> keras (conv layer, bn layer)
    pairs = {("conv1", "bn1"): ("stem_conv", "stem_bn")}
    for s, n_blocks in enumerate(blocks, start=1):
        for i in range(n_blocks):
            src, dst = f"layer{s}.{i}", f"stage{s}_block{i + 1}"
            for k in range(1, n_convs + 1):
                pairs[(f"{src}.conv{k}", f"{src}.bn{k}")] = (f"{dst}_conv{k}", f"{dst}_bn{k}")
            if i == 0 and (s > 1 or kind == "bottleneck"):
                pairs[(f"{src}.downsample.0", f"{src}.downsample.1")] = (
                    f"{dst}_shortcut_conv",
                    f"{dst}_shortcut_bn",
                )

    mapping: dict[str, tuple[str, bool]] = {}  # torch key -> (keras key, is a conv kernel)
    for (conv, bn), (kconv, kbn) in pairs.items():
        mapping[f"{conv}.weight"] = (f"{kconv}/kernel", True)
        for t, k in _TORCH_BN.items():
            mapping[f"{bn}.{t}"] = (f"{kbn}/{k}", False)

    used = {
        k for k in state_dict if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    missing, unknown = sorted(mapping.keys() - used), sorted(used - mapping.keys())
    if missing or unknown:
        raise ValueError(
            f"state_dict does not look like a torchvision resnet{depth}: missing keys "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}, unknown keys "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; check the depth argument"
        )
    out = {}
    for torch_key, (keras_key, is_kernel) in mapping.items():
        array = np.asarray(state_dict[torch_key], dtype=np.float32)
        out[keras_key] = np.transpose(array, (2, 3, 1, 0)) if is_kernel else array
    return out


def convert_torchvision_resnet(state_dict_path: str, depth: int, out_path: str) -> None:
    """Convert a torchvision ResNet ``state_dict`` file (``torch.save``) to a weights ``.npz``.

    Needs PyTorch (imported only here). The result loads into ``build_resnet(depth)`` (width 64,
    any output stride) with :func:`load_backbone_weights` and reproduces torchvision's features.

    Example:
        >>> convert_torchvision_resnet("resnet50.pth", 50, "resnet50.npz")  # doctest: +SKIP
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "convert_torchvision_resnet needs PyTorch to read the state_dict: `pip install torch` "
            "(CPU build is enough), or convert a dict of numpy arrays with "
            "torchvision_resnet_to_keras"
        ) from e
    state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
    _write_npz(torchvision_resnet_to_keras(arrays, depth), out_path)


#: keras-hub block type -> this package's block kind (the "_vd" and pre-activation variants differ
#: in architecture, not only in names, and are refused)
_HUB_BLOCKS = {"basic_block": "basic", "bottleneck_block": "bottleneck"}
#: keras-hub ResNet layer names: the stem, then ``stack{s}_block{b}_{k}_{conv,bn}`` counted from 0
#: with ``k = 0`` the projection shortcut
_HUB_LAYER = re.compile(r"stack(\d+)_block(\d+)_(\d)_(conv|bn)")


def _hub_resnet_depth(config: Mapping) -> int:
    """The depth of :func:`build_resnet` (width 64) that has the layout of a keras-hub ResNet."""
    kind = _HUB_BLOCKS.get(config.get("block_type"))
    problems = []
    if kind is None:
        problems.append(
            f"block_type {config.get('block_type')!r} (ResNet-vd's average-pool shortcuts and "
            "3-convolution stem are another architecture)"
        )
    if config.get("use_pre_activation"):
        problems.append("use_pre_activation=True (ResNetV2 normalises before each convolution)")
    if list(config.get("input_conv_filters", ())) != [64] or list(
        config.get("input_conv_kernel_sizes", ())
    ) != [7]:
        problems.append("a stem other than one 7x7 convolution with 64 filters")
    if list(config.get("stackwise_num_filters", ())) != [64, 128, 256, 512]:
        problems.append(f"stackwise_num_filters {config.get('stackwise_num_filters')}")
    if list(config.get("stackwise_num_strides", ())) != [1, 2, 2, 2]:
        problems.append(f"stackwise_num_strides {config.get('stackwise_num_strides')}")
    blocks = tuple(config.get("stackwise_num_blocks", ()))
    depth = next((d for d, spec in RESNET_SPECS.items() if spec == (blocks, kind)), None)
    if depth is None and kind is not None:
        problems.append(f"{kind} blocks {list(blocks)} per stage")
    if problems:
        layouts = ", ".join(f"{d}: {list(b)} {k}" for d, (b, k) in RESNET_SPECS.items())
        raise ValueError(
            "the keras-hub ResNet does not have the layout of build_resnet: "
            + "; ".join(problems)
            + ". Supported: the ResNet v1 presets (resnet_18_imagenet, resnet_50_imagenet, "
            "resnet_101_imagenet): block_type 'basic_block' or 'bottleneck_block', "
            "use_pre_activation=False, input_conv_filters [64] of size [7], stackwise_num_filters "
            f"[64, 128, 256, 512], strides [1, 2, 2, 2] and blocks per depth ({layouts})"
        )
    return depth


def _our_layer_name(hub_name: str) -> str | None:
    """This package's name of a keras-hub ResNet layer with weights (None: not a conv or BN)."""
    if hub_name in ("conv1_conv", "conv1_bn"):
        return f"stem_{hub_name.removeprefix('conv1_')}"
    match = _HUB_LAYER.fullmatch(hub_name)
    if match is None:
        return None
    stack, block, k, kind = match.groups()
    prefix = f"stage{int(stack) + 1}_block{int(block) + 1}"
    return f"{prefix}_shortcut_{kind}" if k == "0" else f"{prefix}_{kind}{k}"


def keras_hub_resnet_to_keras(hub_backbone: keras.Model) -> dict[str, np.ndarray]:
    """Map the weights of a keras-hub ``ResNetBackbone`` to this package's weight keys.

    ``conv1_conv`` / ``conv1_bn`` become ``stem_conv`` / ``stem_bn``;
    ``stack{s}_block{b}_{k}_conv`` / ``_bn`` (counted from 0) become
    ``stage{s+1}_block{b+1}_conv{k}`` / ``_bn{k}``, and ``k = 0`` (the projection shortcut)
    ``_shortcut_conv`` / ``_shortcut_bn``. Kernels are already ``(H, W, in, out)``.

    Args:
        hub_backbone: a ``keras_hub.models.ResNetBackbone`` of the v1 layout (see
            :func:`load_keras_hub_resnet`).

    Returns:
        ``{"<layer_name>/<weight_name>": array}`` as stored in a weights ``.npz``; it loads into
        ``build_resnet(depth)`` (width 64, any output stride).

    Raises:
        ValueError: the backbone's layout is not one of :data:`RESNET_SPECS` (ResNetV2, ResNet-vd,
            other filters or strides), or it has a layer with weights this mapping does not know.
    """
    _hub_resnet_depth(hub_backbone.get_config())
    arrays, unknown = {}, []
    for layer in hub_backbone.layers:
        if not layer.weights:
            continue
        ours = _our_layer_name(layer.name)
        if ours is None:
            unknown.append(layer.name)
            continue
        for variable in layer.weights:
            arrays[f"{ours}/{variable.name}"] = np.asarray(
                keras.ops.convert_to_numpy(variable), np.float32
            )
    if unknown:
        raise ValueError(
            f"keras-hub ResNet {hub_backbone.name!r} has layers with weights that map to no layer "
            f"of build_resnet: {unknown[:10]}"
        )
    return arrays


def _hub_resnet(preset: str):
    """The keras-hub ResNet backbone of ``preset`` (a handle or a local folder), checked."""
    hub_backbone = _keras_hub().models.Backbone.from_preset(preset)
    if type(hub_backbone).__name__ != "ResNetBackbone":
        raise ValueError(
            f"preset {preset!r} holds a {type(hub_backbone).__name__}, not a ResNetBackbone; use "
            f"backbone='preset:{preset}' to train on it as a keras-hub encoder instead"
        )
    # build_resnet takes ImageNet-normalised images (the architectures' ImageNormalization)
    scale, offset = _affine(_preset_normalization(preset))
    if not (np.allclose(scale, 1, atol=1e-3) and np.allclose(offset, 0, atol=1e-3)):
        raise ValueError(
            f"preset {preset!r} expects images normalised otherwise than with ImageNet's mean and "
            "std (its image_converter.json), which build_resnet's inputs are; use "
            f"backbone='preset:{preset}', which folds the preset's normalisation into the model"
        )
    return hub_backbone


def load_keras_hub_resnet(
    backbone: keras.Model, preset: str, *, skip_mismatch: bool = False
) -> list[str]:
    """Load the weights of a keras-hub ResNet preset into a (dilated) :func:`build_resnet`.

    keras-hub's ResNet v1 (He et al., CVPR 2016) puts the stride on the 3x3 convolution and
    pads symmetrically, like this package's ResNet, and has no dilation. The weights load
    layer by layer (:func:`keras_hub_resnet_to_keras`) into any output stride: the dilated
    convolutions reuse the 3x3 kernels, as DeepLab's dilated ResNets reuse ImageNet weights
    (Chen et al., arXiv 2017). At output stride 32 the pyramid equals keras-hub's
    ``pyramid_outputs``. The preset's image normalisation must be ImageNet's (as for the
    ImageNet presets), because the architectures feed the backbone ImageNet-normalised images.

    Args:
        backbone: ``build_resnet(depth, width=64, output_stride=...)`` of the preset's depth.
        preset: a keras-hub handle (``"resnet_50_imagenet"``; downloads once, needs the
            internet) or a local folder written by ``save_to_preset`` (offline).
        skip_mismatch: as :func:`load_backbone_weights`.

    Returns:
        The skipped keys, sorted (empty unless ``skip_mismatch``).

    Raises:
        ValueError: the preset is not a ResNet v1 of a supported layout, expects another image
            normalisation, or does not match ``backbone`` (the message names the keys).

    Example:
        >>> model = build_resnet(50, output_stride=8)                          # doctest: +SKIP
        >>> load_keras_hub_resnet(model, "weights/resnet_50_imagenet")         # doctest: +SKIP
        []
    """
    arrays = keras_hub_resnet_to_keras(_hub_resnet(preset))
    return _assign(backbone, arrays, f"keras-hub preset {preset!r}", skip_mismatch)


def convert_keras_hub_resnet(preset: str, out_path: str) -> int:
    """Convert a keras-hub ResNet preset to a weights ``.npz``; returns the ResNet depth.

    Run once where the preset is (a handle downloads it); the ``.npz`` then loads offline into
    ``build_resnet(depth)`` at any output stride with :func:`load_backbone_weights`.

    Example:
        >>> convert_keras_hub_resnet("resnet_50_imagenet", "r50.npz")  # doctest: +SKIP
        50
    """
    hub_backbone = _hub_resnet(preset)
    _write_npz(keras_hub_resnet_to_keras(hub_backbone), out_path)
    return _hub_resnet_depth(hub_backbone.get_config())


def copy_keras_hub_preset(preset: str, folder: str) -> str:
    """Write keras-hub ``preset`` (a handle or a folder) into the local ``folder``; returns it.

    The backbone (config and weights) and, when the preset has one, its ``ImageConverter`` (the
    image normalisation the encoders fold in) are saved with ``save_to_preset``. Run it once on
    a machine with the internet (a handle downloads through keras-hub); afterwards ``folder``
    loads offline, as ``backbone="preset:<folder>"`` or with :func:`load_keras_hub_resnet`.

    Example:
        >>> copy_keras_hub_preset("resnet_50_imagenet", "weights/r50")  # doctest: +SKIP
        'weights/r50'
    """
    keras_hub = _keras_hub()
    keras_hub.models.Backbone.from_preset(preset).save_to_preset(folder)
    if _preset_normalization(preset) is not None:
        keras_hub.layers.ImageConverter.from_preset(preset).save_to_preset(folder)
    return folder


#: the file of a keras-hub preset folder that describes its backbone (``save_to_preset``)
PRESET_CONFIG = "config.json"

_LOCAL_SOURCES = (
    "a local keras-hub ResNet preset folder (written once by copy_keras_hub_preset, see the "
    "README's 'Pretrained encoders') or an .npz written by save_backbone_weights, "
    "convert_keras_hub_resnet or convert_torchvision_resnet"
)


def _preset_config(folder: str) -> dict:
    """The backbone description (``config.json``) of the preset folder ``folder``."""
    path = os.path.join(folder, PRESET_CONFIG)
    if not os.path.isfile(path):
        raise ValueError(
            f"{folder!r} is a folder but not a keras-hub preset (it has no {PRESET_CONFIG}); "
            f"give {_LOCAL_SOURCES}"
        )
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path!r} is not a readable keras-hub preset description ({e}); write the preset "
            "folder again with copy_keras_hub_preset"
        ) from e
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ValueError(
            f"{path!r} does not describe a keras-hub backbone; write the preset folder again "
            "with copy_keras_hub_preset"
        )
    return config


def keras_hub_preset_depth(folder: str) -> int:
    """The :func:`build_resnet` depth whose weights the local keras-hub preset ``folder`` holds.

    Reads only the preset's ``config.json`` (no weights, no keras-hub model).

    Raises:
        ValueError: ``folder`` is not a preset folder, holds another backbone than a
            ``ResNetBackbone`` (a ViT, ...), or a ResNet of another layout (ResNetV2, ResNet-vd).
    """
    config = _preset_config(folder)
    class_name = config.get("class_name")
    if class_name != "ResNetBackbone":
        raise ValueError(
            f"preset {folder!r} holds a {class_name}, not a ResNetBackbone; its weights do not "
            f"fit the project's ResNet. Train on it as a keras-hub encoder with "
            f"backbone='preset:{folder}' instead"
        )
    return _hub_resnet_depth(config["config"])


def resnet_weights_kind(path: str) -> str:
    """What the local ``path`` holds: ``"preset"`` (a keras-hub preset folder) or ``"npz"``.

    Cheap: reads a preset's ``config.json`` or an archive's first bytes, no weights.

    Raises:
        ValueError: ``path`` does not exist, or is a folder that is not a keras-hub ResNet preset
            (:func:`keras_hub_preset_depth`), or a file that is not an ``.npz`` archive; the
            message names the path and what to give instead.
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        keras_hub_preset_depth(path)
        return "preset"
    if os.path.isfile(path):
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path!r} is neither a keras-hub preset folder nor an .npz archive (an .npz is "
                f"a zip of arrays); give {_LOCAL_SOURCES}"
            )
        return "npz"
    if not os.path.lexists(path):
        hint = ""
        if os.sep not in path and "/" not in path and not path.endswith(".npz"):
            # a keras-hub handle such as "resnet_50_imagenet": runs never download
            hint = (
                f"; a keras-hub handle is not downloaded during a run: write it into a folder "
                f"once, on a machine with the internet, with copy_keras_hub_preset({path!r}, "
                f"'weights/{path}') and give that folder"
            )
        raise ValueError(f"{path!r} does not exist; give {_LOCAL_SOURCES}{hint}")
    raise ValueError(f"{path!r} is neither a folder nor a file; give {_LOCAL_SOURCES}")


def load_resnet_weights(backbone: keras.Model, path: str) -> str:
    """Load pretrained weights from the local ``path`` into a (dilated) :func:`build_resnet`.

    ``path`` is a keras-hub ResNet preset folder (:func:`load_keras_hub_resnet`) or an ``.npz``
    (:func:`load_backbone_weights`); nothing downloads. Every key and shape is checked before
    anything is assigned, so a failed load leaves ``backbone`` unchanged.

    Returns:
        ``"preset"`` or ``"npz"``, what ``path`` held (:func:`resnet_weights_kind`).

    Raises:
        ValueError: ``path`` is missing or of another kind (:func:`resnet_weights_kind`), or its
            weights do not match ``backbone`` (another depth or width; the message names the
            keys and shapes).

    Example:
        >>> model = build_resnet(50, output_stride=8)                        # doctest: +SKIP
        >>> load_resnet_weights(model, "weights/resnet_50_imagenet")         # doctest: +SKIP
        'preset'
    """
    kind = resnet_weights_kind(path)
    path = os.path.expanduser(path)
    if kind == "preset":
        load_keras_hub_resnet(backbone, path)
    else:
        load_backbone_weights(backbone, path)
    return kind
