"""Backbone weights from local ``.npz`` files, and conversion of torchvision ResNet weights.

File format: one array per variable, keyed ``"<layer_name>/<weight_name>"`` (e.g.
``"stage2_block1_conv1/kernel"``, ``"stem_bn/gamma"``, ``"stem_bn/moving_mean"``), convolution
kernels in Keras ``(H, W, in, out)`` layout. Nothing here downloads: pretrained weights are
converted once from a file the user has, e.g. a torchvision ``resnet50`` ``state_dict``
(:func:`convert_torchvision_resnet`), then loaded with :func:`load_backbone_weights`.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping

import keras
import numpy as np

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
    arrays = _read_npz(path)
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
            f"backbone weights file {path!r} does not match model {backbone.name!r} "
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
