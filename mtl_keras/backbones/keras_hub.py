"""keras-hub vision backbones as shared encoders returning a ``{"P2": ..., "P5": ...}`` pyramid.

A keras-hub backbone comes in two ways, both through :func:`mtl_keras.backbones.get`:

* ``"keras_hub.<Class>"`` with the class's constructor arguments, e.g.
  ``get("keras_hub.DINOV2Backbone", patch_size=14, num_layers=12, ...)``;
* ``"preset:<handle or local directory>"`` through ``keras_hub.models.Backbone.from_preset``; a
  folder written once by ``save_to_preset`` (or downloaded once) loads offline.

The result is a :class:`KerasHubEncoder` layer, built for the input size it is first called on.
How it turns the backbone into a pyramid depends on the family:

* ``FeaturePyramidBackbone`` CNNs (ResNet, MiT, CSPNet, EfficientNet, DenseNet): their
  ``pyramid_outputs``, renamed by stride (stride ``2**k`` -> ``f"P{k}"``, whatever keras-hub calls
  the level: MiT's ``P1`` is at stride 4 and becomes ``P2``);
* plain transformers (ViT, DINOv2, DINOv3): four evenly spaced transformer layers (the layers
  DPT reads: 3, 6, 9, 12 of 12), their patch tokens as maps, resampled by DPT's *reassemble*
  (Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021): a 1x1 projection, then
  a 4x4/4 and a 2x2/2 transposed convolution, the identity and a 3x3/2 convolution, giving
  strides ``patch/4, patch/2, patch, 2*patch`` as ``P2..P5`` (4..32 for 16-pixel patches);
* Swin Transformer: the output of every stage before its patch merging (strides 4..32).

**Input sizes.** CNNs take any size. Transformers are rebuilt for the size the encoder is built
for: DINOv2/DINOv3 interpolate their position embeddings themselves; for ViT the patch grid of the
position embeddings is resized bilinearly (the class-token embedding kept). A size that is not a
multiple of the patch size (times ``2**(stages - 1)`` for Swin) is refused with the nearest valid
sizes.

**Normalisation.** The architectures feed every backbone ImageNet-normalised images
(:class:`~mtl_keras.architectures.base.ImageNormalization`). keras-hub encoders expect what their
preset's ``ImageConverter`` produces, ``raw * scale + offset`` from raw pixels in 0..255. The
encoder folds both into one per-channel affine map, so raw uint8 images still go in and exports
still serve raw pixels. The convention is read from the preset's ``image_converter.json`` when it
has one; ``normalization={"scale": ..., "offset": ...}`` sets it; otherwise ImageNet
normalisation is assumed (the fold is then the identity).
"""

from __future__ import annotations

import math
import os
import types
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import ops

HUB_PREFIX = "keras_hub."
PRESET_PREFIX = "preset:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: DPT's reassemble resampling of the four transformer levels (factor relative to the patch grid)
_REASSEMBLE = (4, 2, 1, 0.5)
_TRANSFORMERS = ("ViTBackbone", "DINOV2Backbone", "DINOV3Backbone")
_FIXED_SIZE = (*_TRANSFORMERS, "SwinTransformerBackbone")


def is_keras_hub(name) -> bool:
    """Whether a backbone name refers to keras-hub (``"keras_hub.<Class>"`` or ``"preset:..."``)."""
    return isinstance(name, str) and name.startswith((HUB_PREFIX, PRESET_PREFIX))


def _keras_hub():
    try:
        import keras_hub
    except ImportError as e:  # pragma: no cover - keras-hub is a dependency
        raise ImportError(
            "keras-hub backbones need the keras-hub package: `pip install keras-hub`"
        ) from e
    return keras_hub


def _preset_normalization(preset: str) -> dict | None:
    """``{"scale", "offset"}`` of the preset's ImageConverter, or None when it has none."""
    keras_hub = _keras_hub()
    if os.path.isdir(preset) and not os.path.exists(os.path.join(preset, "image_converter.json")):
        return None
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except (ValueError, FileNotFoundError):
        return None
    return {"scale": converter.scale, "offset": converter.offset}


def keras_hub_backbone(
    spec: str,
    *,
    normalization: Mapping | None = None,
    pyramid_channels: Sequence[int] | None = None,
    transformer_layers: Sequence[int] | None = None,
    name: str | None = None,
    **kwargs,
) -> KerasHubEncoder:
    """Build the encoder for ``"keras_hub.<Class>"`` (kwargs: the class's) or ``"preset:<x>"``.

    Args:
        spec: ``"keras_hub.<Class>"`` or ``"preset:<handle or directory>"``.
        normalization: ``{"scale": s, "offset": o}`` in keras-hub's ImageConverter convention
            (``raw * s + o``, scalars or per-channel); default: the preset's, else ImageNet.
        pyramid_channels: channels of the four reassembled transformer levels (default
            ``hidden/8, hidden/4, hidden/2, hidden``: DPT's 96/192/384/768 on ViT-B).
        transformer_layers: 1-based transformer layers read by the pyramid (default evenly
            spaced, e.g. 3/6/9/12 of 12 as DPT).
        name: layer name (default the keras-hub backbone's class name).
        **kwargs: the keras-hub class's constructor arguments (``"keras_hub."`` only), or
            ``Backbone.from_preset`` arguments (``"preset:"``, e.g. ``load_weights=False``).

    Example:
        >>> enc = keras_hub_backbone("keras_hub.ViTBackbone", image_shape=(32, 32, 3),
        ...     patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
        >>> sorted(enc(keras.Input((32, 32, 3))))
        ['P2', 'P3', 'P4', 'P5']
    """
    keras_hub = _keras_hub()
    if spec.startswith(PRESET_PREFIX):
        preset = spec[len(PRESET_PREFIX) :]
        if not preset:
            raise ValueError("backbone 'preset:' needs a handle or directory after the colon")
        source = keras_hub.models.Backbone.from_preset(preset, **kwargs)
        if normalization is None:
            normalization = _preset_normalization(preset)
        config = keras.saving.serialize_keras_object(source)
    else:
        class_name = spec[len(HUB_PREFIX) :]
        cls = getattr(keras_hub.models, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, keras_hub.models.Backbone)):
            valid = sorted(
                n
                for n in dir(keras_hub.models)
                if n.endswith("Backbone")
                and isinstance(getattr(keras_hub.models, n), type)
                and issubclass(getattr(keras_hub.models, n), keras_hub.models.Backbone)
            )
            raise ValueError(
                f"{class_name!r} is not a keras-hub backbone class; valid: {', '.join(valid)}"
            )
        source = None  # built from arguments: freshly initialised in build()
        config = keras.saving.serialize_keras_object(cls(**kwargs))
    return KerasHubEncoder(
        config,
        normalization=dict(normalization) if normalization else None,
        pyramid_channels=pyramid_channels,
        transformer_layers=transformer_layers,
        source=source,
        name=name or config["class_name"].removesuffix("Backbone").lower(),
    )


def _affine(normalization: Mapping | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``a, b`` with ``hub_input = imagenet_normalised * a + b``."""
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    if not normalization:
        return np.ones(3, np.float32), np.zeros(3, np.float32)
    unknown = sorted(set(normalization) - {"scale", "offset"})
    if unknown:
        raise ValueError(f"normalization takes 'scale' and 'offset' only, got {unknown}")
    scale = np.broadcast_to(np.asarray(normalization.get("scale") or 1.0, np.float64), 3)
    offset = np.broadcast_to(np.asarray(normalization.get("offset") or 0.0, np.float64), 3)
    # raw = 255 * (x * std + mean), hub = raw * scale + offset
    return (255 * std * scale).astype(np.float32), (255 * mean * scale + offset).astype(np.float32)


def _nearest(size: int, multiple: int) -> str:
    low = max(multiple, size // multiple * multiple)
    return f"{low} or {low + multiple}"


@keras.saving.register_keras_serializable(package="mtl_keras")
class KerasHubEncoder(keras.layers.Layer):
    """A keras-hub backbone as an encoder: ImageNet-normalised images -> ``{"P2".."P5"}``.

    Built lazily for the input size it is first called on (transformers are rebuilt for it).
    ``get_config`` holds the keras-hub backbone's serialised config, so a ``.keras`` file reloads
    it and restores its weights without keras-hub presets or a network connection.

    Args:
        backbone: ``keras.saving.serialize_keras_object`` of the keras-hub backbone.
        normalization: see :func:`keras_hub_backbone`.
        pyramid_channels: see :func:`keras_hub_backbone`.
        transformer_layers: see :func:`keras_hub_backbone`.
        source: a built backbone whose weights are copied in when the encoder is built (not
            part of the config: a reloaded model gets its weights from its file).
    """

    def __init__(
        self,
        backbone: dict,
        normalization: Mapping | None = None,
        pyramid_channels: Sequence[int] | None = None,
        transformer_layers: Sequence[int] | None = None,
        source=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone_config = backbone
        self.normalization = dict(normalization) if normalization else None
        self.pyramid_channels = list(pyramid_channels) if pyramid_channels else None
        self.transformer_layers = list(transformer_layers) if transformer_layers else None
        self._scale, self._offset = _affine(self.normalization)
        # a namespace is not tracked: the source's variables do not become this layer's
        self._source = types.SimpleNamespace(backbone=source)
        self.class_name = backbone["class_name"]

    # --- building ---------------------------------------------------------------------------

    def _check_size(self, config: dict, h, w) -> None:
        if self.class_name not in _FIXED_SIZE:
            return
        if h is None or w is None:
            raise ValueError(
                f"{self.class_name} needs a fixed input size (position embeddings, windows); "
                "build the architecture with image_size=(H, W)"
            )
        patch = config["patch_size"]
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        if self.class_name == "SwinTransformerBackbone":
            multiple = patch * 2 ** (len(config["depths"]) - 1) * config["window_size"]
        else:
            multiple = patch
        bad = [(d, s) for d, s in (("height", h), ("width", w)) if s % multiple]
        if bad:
            hint = "; ".join(f"{d} {s}: nearest valid {_nearest(s, multiple)}" for d, s in bad)
            raise ValueError(
                f"{self.class_name} takes sizes that are multiples of {multiple} (patch size "
                f"{patch}{' x merges x window' if multiple != patch else ''}), got {h}x{w} "
                f"({hint}); resize the images or choose image_size accordingly"
            )

    def _backbone_at(self, h, w):
        """The keras-hub backbone rebuilt for ``(h, w)`` inputs in this layer's dtype policy."""
        keras_hub = _keras_hub()
        serialized = {**self.backbone_config, "config": dict(self.backbone_config["config"])}
        config = serialized["config"]
        self._check_size(config, h, w)
        if "image_shape" in config:
            config["image_shape"] = [h, w, 3]
        config["dtype"] = self.dtype_policy.name
        backbone = keras.saving.deserialize_keras_object(
            serialized, custom_objects={self.class_name: getattr(keras_hub.models, self.class_name)}
        )
        source = self._source.backbone
        if source is not None:
            _copy_weights(source, backbone)
            self._source.backbone = None
        return backbone

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        backbone = self._backbone_at(h, w)
        if self.class_name in _TRANSFORMERS:
            self.pyramid = self._transformer_pyramid(backbone, h, w)
        elif self.class_name == "SwinTransformerBackbone":
            patch = backbone.get_config()["patch_size"]
            self.swin, self.swin_grid = backbone, (h // patch, w // patch)
            self.swin_maps = [
                PatchTokensToMap(
                    (h // patch // 2**i, w // patch // 2**i),
                    dtype=self.dtype_policy,
                    name=f"swin_stage{i}_map",
                )
                for i in range(len(backbone.stages))
            ]
        elif hasattr(backbone, "pyramid_outputs"):
            self.pyramid = _cnn_pyramid(backbone, h)
        else:
            raise ValueError(
                f"{self.class_name} has no pyramid_outputs and no adapter here; supported: "
                "FeaturePyramidBackbone subclasses (ResNet, MiT, CSPNet, EfficientNet, DenseNet), "
                f"{', '.join(_FIXED_SIZE)}"
            )
        self.built = True

    def _transformer_pyramid(self, backbone, h, w) -> keras.Model:
        config = backbone.get_config()
        patch = config["patch_size"]
        patch = patch[0] if isinstance(patch, list | tuple) else patch
        hidden, depth = config["hidden_dim"], config["num_layers"]
        chosen = self.transformer_layers or [max(1, round(depth * i / 4)) for i in range(1, 5)]
        if len(chosen) != 4 or not all(1 <= i <= depth for i in chosen):
            raise ValueError(
                f"transformer_layers must be 4 layer numbers in 1..{depth}, got {chosen}"
            )
        channels = self.pyramid_channels or [max(hidden // 8, 1), hidden // 4, hidden // 2, hidden]
        if len(channels) != 4:
            raise ValueError(f"pyramid_channels must list 4 channel counts, got {channels}")
        tokens = _transformer_tokens(backbone, chosen)
        grid = (h // patch, w // patch)
        images = backbone.inputs[0]
        pyramid = {}
        for level, (x, c, factor) in enumerate(zip(tokens, channels, _REASSEMBLE)):
            name = f"reassemble{level + 1}"
            x = PatchTokensToMap(grid, dtype=self.dtype_policy, name=f"{name}_tokens")(x)
            x = keras.layers.Conv2D(c, 1, dtype=self.dtype_policy, name=f"{name}_project")(x)
            if factor > 1:
                x = keras.layers.Conv2DTranspose(
                    c, int(factor), strides=int(factor), dtype=self.dtype_policy, name=f"{name}_up"
                )(x)
            elif factor < 1:
                x = keras.layers.Conv2D(
                    c, 3, strides=2, padding="same", dtype=self.dtype_policy, name=f"{name}_down"
                )(x)
            pyramid[f"P{level + 2}"] = x
        return keras.Model(images, pyramid, name=f"{self.name}_pyramid")

    def call(self, images, training=None):
        a = ops.convert_to_tensor(self._scale, self.compute_dtype)
        b = ops.convert_to_tensor(self._offset, self.compute_dtype)
        x = ops.cast(images, self.compute_dtype) * a + b
        if self.class_name == "SwinTransformerBackbone":
            return _swin_pyramid(self.swin, x, self.swin_grid, self.swin_maps)
        return self.pyramid(x, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": self.backbone_config,
            "normalization": self.normalization,
            "pyramid_channels": self.pyramid_channels,
            "transformer_layers": self.transformer_layers,
        }


@keras.saving.register_keras_serializable(package="mtl_keras")
class PatchTokensToMap(keras.layers.Layer):
    """``(B, prefix + h*w, C)`` tokens -> ``(B, h, w, C)``: drops the class/register tokens."""

    def __init__(self, grid: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.grid = tuple(int(g) for g in grid)

    def call(self, tokens):
        h, w = self.grid
        patches = tokens[:, tokens.shape[1] - h * w :, :]
        return ops.reshape(patches, (-1, h, w, tokens.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.grid, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid}


def _transformer_tokens(backbone, chosen: Sequence[int]) -> list:
    """Token sequences after the 1-based transformer layers ``chosen``, in the backbone's graph."""
    if hasattr(backbone, "pyramid_outputs"):  # DINOv2/DINOv3: "stem", "stage1", ...
        return [backbone.pyramid_outputs[f"stage{i}"] for i in chosen]
    # keras-hub's ViT runs all blocks inside one ViTEncoder layer: replay them one by one
    x = backbone.get_layer("vit_patching_and_embedding").output
    encoder = backbone.get_layer("vit_encoder")
    x = encoder.dropout(x)
    after = {}
    for i, block in enumerate(encoder.encoder_layers[: max(chosen)], start=1):
        x = after[i] = block(x)
    return [after[i] for i in chosen]


def _swin_pyramid(backbone, images, grid: Sequence[int], to_map: Sequence) -> dict:
    """Every Swin stage's output before its patch merging, as maps at strides 4..32.

    Run layer by layer at call time: the stages' blocks share names (``blocks_0`` in every
    stage), so no functional sub-model can hold them.
    """
    x = backbone.get_layer("pos_drop")(backbone.get_layer("patch_embedding")(images))
    gh, gw = grid
    pyramid = {}
    for i, stage in enumerate(backbone.stages):
        for block in stage.blocks:
            x = block(x)
        last = i == len(backbone.stages) - 1
        pyramid[f"P{i + 2}"] = to_map[i](backbone.norm(x) if last else x)
        if stage.downsample is not None:
            x = stage.downsample(x, H=gh, W=gw)
            gh, gw = gh // 2, gw // 2
    return pyramid


def _cnn_pyramid(backbone, height: int | None) -> keras.Model:
    """``pyramid_outputs`` renamed ``P{log2 stride}`` (strides read on a 256x256 probe when the
    input size is not fixed)."""
    outputs = dict(backbone.pyramid_outputs)
    shapes = {k: x.shape for k, x in outputs.items()}
    if height is None:
        probe = keras.Model(backbone.inputs, outputs)
        shapes = {
            k: x.shape
            for k, x in probe.compute_output_spec(keras.KerasTensor((1, 256, 256, 3))).items()
        }
        height = 256
    pyramid = {}
    for key, x in outputs.items():
        stride = height / shapes[key][1]
        pyramid[f"P{int(round(math.log2(stride)))}"] = x
    return keras.Model(backbone.inputs, pyramid, name=f"{backbone.name}_pyramid")


def _copy_weights(source, target) -> None:
    """Copy ``source``'s weights into ``target`` (same architecture, maybe another input size)."""
    if len(source.weights) != len(target.weights):
        raise ValueError(
            f"cannot copy the weights of {source.name!r} ({len(source.weights)} variables) into "
            f"its rebuild ({len(target.weights)})"
        )
    for src, dst in zip(source.weights, target.weights):
        value = keras.ops.convert_to_numpy(src)
        if tuple(value.shape) != tuple(dst.shape):
            if "position_embedding" not in dst.path:
                raise ValueError(
                    f"variable {dst.path!r} has shape {tuple(dst.shape)} at this input size but "
                    f"{tuple(value.shape)} in the preset; only position embeddings are resized"
                )
            value = _interpolate_positions(value, tuple(dst.shape), target)
        dst.assign(value.astype(dst.dtype))


def _interpolate_positions(value: np.ndarray, shape: tuple, target) -> np.ndarray:
    """ViT position embedding ``(1 + h0*w0, C)`` resized to the target's ``(1 + h*w, C)``."""
    config = target.get_config()
    patch = config["patch_size"]
    patch = patch[0] if isinstance(patch, list | tuple) else patch
    h, w = config["image_shape"][0] // patch, config["image_shape"][1] // patch
    prefix = shape[0] - h * w
    side = math.isqrt(value.shape[0] - prefix)
    if side * side != value.shape[0] - prefix:
        raise ValueError(
            f"cannot resize a position embedding of {value.shape[0]} positions: its patch grid "
            "is not square"
        )
    grid = value[prefix:].reshape(1, side, side, -1)
    resized = keras.ops.convert_to_numpy(
        keras.ops.image.resize(grid, (h, w), interpolation="bilinear")
    )
    return np.concatenate([value[:prefix], resized.reshape(h * w, -1)], axis=0)
