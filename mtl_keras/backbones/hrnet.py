"""HRNet backbone (small-v2 configuration) returning a feature pyramid.

HRNet (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
TPAMI 2020) keeps a high-resolution branch through the whole network and adds a lower-resolution
branch at every stage; each multi-resolution module runs residual blocks per branch and then
exchanges information between all branches (fuse: 1x1 conv + BN + bilinear upsampling from
lower resolutions, chains of strided 3x3 conv + BN from higher ones, summed, ReLU).

The configuration is ``hrnet_w18_small_model_v2`` of HRNet-Image-Classification, the backbone of
the survey's HRNet-18 experiments (Vandenhende et al., TPAMI 2022): a stem of two strided 3x3
convolutions (64 channels), stage 1 with 2 bottleneck blocks (64 planes, 256 channels), then
stages 2, 3 and 4 with 1, 3 and 2 modules of 2 basic blocks per branch on 2, 3 and 4 branches of
18, 36, 72 and 144 channels. The classification head of the ImageNet model is not built.

Layer names (``s`` stage, ``m`` module, ``i``/``j`` branches, ``b`` block, all counted from 1):

* stem: ``stem_conv{1,2}``, ``stem_bn{1,2}``, ``stem_relu{1,2}``;
* stage 1: ``stage1_block{b}_{conv,bn}{1,2,3}`` and ``stage1_block1_shortcut_{conv,bn}``;
* transitions into stage ``k + 1``: ``transition{k}_branch{i}_{conv,bn,relu}`` (channel change of
  an existing branch) or ``transition{k}_branch{i}_down{n}_{conv,bn,relu}`` (a new branch);
* modules: ``stage{s}_module{m}_branch{i}_block{b}_{conv,bn}{1,2}``, fuse layers
  ``stage{s}_module{m}_fuse{i}_{j}_{conv,bn}`` (from a lower resolution ``j > i``) and
  ``stage{s}_module{m}_fuse{i}_{j}_down{n}_{conv,bn}`` (from a higher one);
* stage outputs: ``stage{s}_output{i}`` (the last module's fused ReLUs; ``stage1_output1`` for
  stage 1). The pyramid ``P2``..``P5`` is ``stage4_output1``..``stage4_output4``.

Every 3x3 convolution pads explicitly and symmetrically like PyTorch, and upsampling is bilinear
with half-pixel centres (``F.interpolate(..., mode="bilinear", align_corners=False)``), so weights
converted with :func:`hrnet_torch_to_keras` reproduce the PyTorch model's features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from mtl_keras.backbones._blocks import ConvBN, residual_block
from mtl_keras.heads.simple import ResizeLike


@dataclasses.dataclass(frozen=True)
class HRNetSpec:
    """The block counts of one HRNet configuration.

    Attributes:
        stage1_blocks: bottleneck blocks of stage 1.
        modules: multi-resolution modules of stages 2, 3 and 4.
        blocks: basic blocks per branch in every module of stages 2, 3 and 4.
    """

    stage1_blocks: int
    modules: tuple[int, int, int]
    blocks: tuple[int, int, int]


#: ``hrnet_w18_small_model_v2`` (small v2) and the full HRNet-W18 layout, per the published
#: configs, and the smallest layout with every kind of layer (one block, one module per stage) for
#: tests and demos
HRNET_SPECS: dict[str, HRNetSpec] = {
    "small_v2": HRNetSpec(stage1_blocks=2, modules=(1, 3, 2), blocks=(2, 2, 2)),
    "full": HRNetSpec(stage1_blocks=4, modules=(1, 4, 3), blocks=(4, 4, 4)),
    "tiny": HRNetSpec(stage1_blocks=1, modules=(1, 1, 1), blocks=(1, 1, 1)),
}
_BN_MOMENTUM = 0.99  # PyTorch momentum 0.01, as in the HRNet segmentation code


def hrnet_pyramid_channels(width: int = 18) -> dict[str, int]:
    """Channels of the pyramid levels of :func:`build_hrnet`: ``width * (1, 2, 4, 8)``.

    Example:
        >>> hrnet_pyramid_channels(18)
        {'P2': 18, 'P3': 36, 'P4': 72, 'P5': 144}
    """
    return {f"P{i + 2}": width * 2**i for i in range(4)}


def _transition(layers: ConvBN, xs: list, channels: Sequence[int], name: str) -> list:
    """Adapt existing branches to the new stage's channels and add the new lower branch(es)."""
    out = []
    for i, filters in enumerate(channels, start=1):
        if i <= len(xs):
            x = xs[i - 1]
            if x.shape[-1] != filters:
                x = layers.conv_bn(x, filters, 3, f"{name}_branch{i}", relu=True)
            out.append(x)
        else:  # a new branch: strided 3x3 convs from the lowest existing resolution
            x = xs[-1]
            steps = i - len(xs)
            for n in range(1, steps + 1):
                filters_n = filters if n == steps else x.shape[-1]
                x = layers.conv_bn(x, filters_n, 3, f"{name}_branch{i}_down{n}", 2, relu=True)
            out.append(x)
    return out


def _module(layers: ConvBN, xs: list, blocks: int, name: str, out_names: list[str]) -> list:
    """Residual blocks per branch, then the all-to-all fuse of the branches."""
    xs = list(xs)
    for i, x in enumerate(xs, start=1):
        for b in range(1, blocks + 1):
            x = residual_block(layers, x, "basic", x.shape[-1], f"{name}_branch{i}_block{b}")
        xs[i - 1] = x
    fused = []
    for i, target in enumerate(xs, start=1):
        terms = []
        for j, source in enumerate(xs, start=1):
            prefix = f"{name}_fuse{i}_{j}"
            if j == i:
                terms.append(source)
            elif j > i:  # lower resolution: 1x1 conv + BN, bilinear upsampling
                y = layers.conv_bn(source, target.shape[-1], 1, prefix)
                terms.append(ResizeLike(name=f"{prefix}_up")([y, target]))
            else:  # higher resolution: i - j strided 3x3 conv + BN (ReLU between them)
                y = source
                for n in range(1, i - j + 1):
                    last = n == i - j
                    filters = target.shape[-1] if last else source.shape[-1]
                    y = layers.conv_bn(y, filters, 3, f"{prefix}_down{n}", 2, relu=not last)
                terms.append(y)
        y = keras.layers.Add(name=f"{name}_fuse{i}_add")(terms)
        fused.append(keras.layers.ReLU(name=out_names[i - 1])(y))
    return fused


def build_hrnet(
    *,
    width: int = 18,
    stem_width: int = 64,
    config: str = "small_v2",
    input_shape: Sequence[int | None] = (None, None, 3),
    sync_batchnorm: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Build HRNet returning ``{"P2", "P3", "P4", "P5"}`` at strides 4, 8, 16 and 32.

    Args:
        width: channels of the highest-resolution branch; the branches have
            ``width * (1, 2, 4, 8)`` channels (18 = HRNet-W18).
        stem_width: channels of the stem and planes of the stage-1 bottlenecks (64 in HRNet;
            stage 1 outputs ``4 * stem_width`` channels). Smaller values make tiny test models.
        config: ``"small_v2"`` (``hrnet_w18_small_model_v2``, the survey's HRNet-18),
            ``"full"`` (HRNet-W18) or ``"tiny"`` (tests); see :data:`HRNET_SPECS`.
        input_shape: ``(H, W, 3)`` of the already normalised float32 images; None = any size.
        sync_batchnorm: batch statistics over all replicas under ``tf.distribute``.
        name: model name, default ``"hrnet18"`` for width 18, else ``f"hrnet_w{width}"``.

    Returns:
        A functional ``keras.Model`` mapping images to a dict of 4 feature maps whose channels
        are :func:`hrnet_pyramid_channels`.

    Example:
        >>> model = build_hrnet(width=4, stem_width=8, config="tiny", input_shape=(64, 64, 3))
        >>> {k: tuple(v.shape) for k, v in model.output.items()}["P5"]
        (None, 2, 2, 32)
    """
    if config not in HRNET_SPECS:
        raise ValueError(
            f"unknown HRNet config {config!r}; valid configs: {', '.join(HRNET_SPECS)}"
        )
    if width < 1 or stem_width < 1:
        raise ValueError(
            f"width and stem_width must be positive channel counts, got {width!r} and "
            f"{stem_width!r}; HRNet-W18 uses width=18, stem_width=64"
        )
    spec = HRNET_SPECS[config]
    layers = ConvBN(sync_batchnorm, _BN_MOMENTUM)
    channels = [width * 2**i for i in range(4)]

    # === Stem: two strided 3x3 conv + BN + ReLU ===
    images = keras.Input(tuple(input_shape), name="images")
    x = layers.bn(layers.conv(images, stem_width, 3, "stem_conv1", 2), "stem_bn1")
    x = keras.layers.ReLU(name="stem_relu1")(x)
    x = layers.bn(layers.conv(x, stem_width, 3, "stem_conv2", 2), "stem_bn2")
    x = keras.layers.ReLU(name="stem_relu2")(x)

    # === Stage 1: bottleneck blocks on one branch ===
    for b in range(1, spec.stage1_blocks + 1):
        out_name = "stage1_output1" if b == spec.stage1_blocks else None
        x = residual_block(
            layers, x, "bottleneck", stem_width, f"stage1_block{b}", out_name=out_name
        )
    xs = [x]

    # === Stages 2-4: transition, then multi-resolution modules ===
    for s, (modules, blocks) in enumerate(zip(spec.modules, spec.blocks, strict=True), start=2):
        xs = _transition(layers, xs, channels[:s], f"transition{s - 1}")
        for m in range(1, modules + 1):
            prefix = f"stage{s}_module{m}"
            outs = [
                f"stage{s}_output{i}" if m == modules else f"{prefix}_out{i}"
                for i in range(1, s + 1)
            ]
            xs = _module(layers, xs, blocks, prefix, outs)

    pyramid = {f"P{i + 2}": t for i, t in enumerate(xs)}
    return keras.Model(
        images, pyramid, name=name or ("hrnet18" if width == 18 else f"hrnet_w{width}")
    )


# --- PyTorch checkpoints -----------------------------------------------------------------------

_TORCH_BN = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
#: modules of the ImageNet classifier that the backbone does not build
_CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def _torch_module(layer_name: str) -> str:
    """The PyTorch module path of a conv or BN layer of :func:`build_hrnet` (1-based -> 0-based)."""
    p = layer_name.split("_")
    kind = p[-1]  # "conv" / "bn" (or "conv2", "bn1", ...)
    if p[0] == "stem":  # stem_conv1 -> conv1, stem_bn2 -> bn2
        return kind
    if p[0] == "stage1":  # stage1_block{b}_{conv,bn}{k} / _shortcut_{conv,bn}
        block = int(p[1].removeprefix("block")) - 1
        if p[2] == "shortcut":
            return f"layer1.{block}.downsample.{0 if kind == 'conv' else 1}"
        return f"layer1.{block}.{kind}"
    if p[0].startswith("transition"):  # transition{k}_branch{i}[_down{n}]_{conv,bn}
        branch = int(p[1].removeprefix("branch")) - 1
        index = 0 if kind == "conv" else 1
        if p[2].startswith("down"):
            return f"{p[0]}.{branch}.{int(p[2].removeprefix('down')) - 1}.{index}"
        return f"{p[0]}.{branch}.{index}"
    # stage{s}_module{m}_branch{i}_block{b}_{conv,bn}{k} or _fuse{i}_{j}[_down{n}]_{conv,bn}
    stage, module = p[0], int(p[1].removeprefix("module")) - 1
    if p[2].startswith("branch"):
        branch, block = int(p[2].removeprefix("branch")) - 1, int(p[3].removeprefix("block")) - 1
        return f"{stage}.{module}.branches.{branch}.{block}.{kind}"
    i, j = int(p[2].removeprefix("fuse")) - 1, int(p[3]) - 1
    index = 0 if kind == "conv" else 1
    if p[4].startswith("down"):
        return f"{stage}.{module}.fuse_layers.{i}.{j}.{int(p[4].removeprefix('down')) - 1}.{index}"
    return f"{stage}.{module}.fuse_layers.{i}.{j}.{index}"


def hrnet_torch_keys(model: keras.Model) -> dict[str, str]:
    """``{keras weight key: PyTorch state_dict key}`` for every variable of an HRNet backbone.

    Keras keys are those of :mod:`mtl_keras.backbones.weights` (``"<layer>/<weight>"``); PyTorch
    keys follow HRNet-Image-Classification's ``HighResolutionNet`` (``conv1``, ``layer1.0.conv1``,
    ``transition1.1.0.0``, ``stage3.2.fuse_layers.2.0.0.0``, ...).
    """
    keys = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            keys[f"{layer.name}/kernel"] = f"{_torch_module(layer.name)}.weight"
        elif isinstance(layer, keras.layers.BatchNormalization):
            module = _torch_module(layer.name)
            for k, t in _TORCH_BN.items():
                keys[f"{layer.name}/{k}"] = f"{module}.{t}"
    return keys


def hrnet_torch_to_keras(
    state_dict: Mapping[str, np.ndarray], model: keras.Model
) -> dict[str, np.ndarray]:
    """Map an HRNet PyTorch ``state_dict`` (numpy arrays) to this package's weight keys.

    The ImageNet classifier (``incre_modules``, ``downsamp_modules``, ``final_layer``,
    ``classifier``) and ``num_batches_tracked`` are dropped; kernels go from ``(out, in, H, W)``
    to ``(H, W, in, out)``.

    Args:
        state_dict: parameter name -> array, e.g. of ``hrnet_w18_small_model_v2.pth``.
        model: the HRNet backbone the weights are for (it fixes the expected keys and shapes).

    Returns:
        ``{"<layer_name>/<weight_name>": array}`` as stored in a weights ``.npz``.

    Raises:
        ValueError: keys missing from or unknown to the model's layout.
    """
    mapping = hrnet_torch_keys(model)
    wanted = set(mapping.values())
    used = {
        k
        for k in state_dict
        if not k.startswith(_CLASSIFIER_PREFIXES) and not k.endswith("num_batches_tracked")
    }
    missing, unknown = sorted(wanted - used), sorted(used - wanted)
    if missing or unknown:
        raise ValueError(
            f"state_dict does not match HRNet model {model.name!r}: missing keys "
            f"{missing[:10]}{' ...' if len(missing) > 10 else ''}, unknown keys "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}; build the backbone with the "
            "checkpoint's config and widths (hrnet_w18_small_model_v2: config='small_v2', "
            "width=18, stem_width=64)"
        )
    out = {}
    for keras_key, torch_key in mapping.items():
        array = np.asarray(state_dict[torch_key], dtype=np.float32)
        out[keras_key] = np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array
    return out


def convert_hrnet_checkpoint(state_dict_path: str, out_path: str, **build_kwargs) -> None:
    """Convert an HRNet PyTorch checkpoint (``torch.save``) to a backbone weights ``.npz``.

    Needs PyTorch (imported only here). ``build_kwargs`` go to :func:`build_hrnet` (defaults:
    HRNet-W18 small v2, matching ``hrnet_w18_small_model_v2.pth``).

    Example:
        >>> convert_hrnet_checkpoint(
        ...     "hrnet_w18_small_model_v2.pth", "hrnet18.npz")  # doctest: +SKIP
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "convert_hrnet_checkpoint needs PyTorch to read the checkpoint: `pip install torch` "
            "(CPU build is enough), or convert a dict of numpy arrays with hrnet_torch_to_keras"
        ) from e
    from mtl_keras.backbones.weights import _write_npz

    state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    arrays = {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items()}
    _write_npz(hrnet_torch_to_keras(arrays, build_hrnet(**build_kwargs)), out_path)
