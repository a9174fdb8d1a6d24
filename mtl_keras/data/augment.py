"""Label-consistent augmentation of a dict example with TensorFlow ops (usable in ``tf.data.map``).

An example is ``{"image": uint8 (H, W, 3), task: label, ...}`` in the library's label convention.
Geometry is applied to every map with one resampling (`augment`): horizontal flip, zoom by a scale
``s`` about the image centre, rotation by ``θ`` about the centre, and a crop (at a random position)
of the original size from the zoomed image, padded where the zoomed image is smaller; the result
is sampled at ``output_size``. Each label keeps its meaning:

* class maps (``semseg``, ``human_parts``) and binary maps (``edges``, ``saliency``): nearest
  neighbour, padding 255 (ignore);
* ``image``: bilinear, padding 0; then optional photometric jitter (brightness, contrast,
  saturation, hue), on the image only;
* ``depth``: bilinear over valid pixels only (normalised convolution: the interpolation of
  ``depth · valid`` divided by that of ``valid``, invalid where less than half the weight is
  valid), padding 0 (invalid), and **divided by s**: zooming in by ``s`` makes the scene look ``s``
  times closer (Vandenhende et al., TPAMI 2022, issue #1 of their code; MTAN's RandomScaleCrop);
* ``normals``: the vectors are turned with the image first (flip negates ``x``; rotating the
  image counter-clockwise on screen by ``θ`` maps ``(x, y)`` to
  ``(x cos θ + y sin θ, −x sin θ + y cos θ)`` in the image frame, x right and y down, as the
  survey's ``ScaleNRotate``), then resampled
  bilinearly over valid pixels like depth and renormalised; padding is the zero vector (invalid).

Other keys (e.g. ``id``) pass through. Randomness is stateless: the same ``seed`` (an int tensor of
shape [2]) gives the same augmentation in eager mode, in ``tf.function`` and in ``tf.data``.

Presets follow the survey's code (``get_transformations``): `NYUD_AUGMENT` (flip, scale in
{1, 1.2, 1.5}, no rotation), `PASCAL_AUGMENT` (flip, scale uniform in [0.75, 1.25], rotation
uniform in [−20°, 20°]) and `MTAN_AUGMENT` (flip, scale in {1, 1.2, 1.5}) for the MTAN/LibMTL
NYUv2 and Cityscapes arrays. Interpolation differs from the survey's OpenCV code on purpose:
linear instead of cubic for images and normals, linear over valid pixels instead of nearest for
depth.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> ex = {"image": np.zeros((32, 48, 3), np.uint8), "depth": np.ones((32, 48, 1), np.float32)}
    >>> out = augment(ex, tf.constant([1, 2]), NYUD_AUGMENT, output_size=(16, 24))
    >>> out["image"].shape, out["depth"].dtype
    (TensorShape([16, 24, 3]), tf.float32)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

Tensor = Any

CLASS_MAPS = ("semseg", "human_parts", "edges", "saliency")
IGNORE = 255.0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What `augment` draws for each example.

    Attributes:
        flip: horizontal flip with probability 0.5.
        scales: zoom factors drawn uniformly from this list (takes precedence over
            ``scale_range``), e.g. ``(1.0, 1.2, 1.5)``.
        scale_range: zoom factor drawn uniformly from ``[low, high]``, e.g. ``(0.75, 1.25)``.
        max_rotation: rotation in degrees drawn uniformly from ``[-max_rotation, max_rotation]``.
        brightness: brightness shift drawn from ``[-brightness, brightness]`` (image in [0, 1]).
        contrast: contrast factor drawn from ``[1 - contrast, 1 + contrast]``.
        saturation: saturation factor drawn from ``[1 - saturation, 1 + saturation]``.
        hue: hue shift drawn from ``[-hue, hue]`` (fraction of the hue circle, at most 0.5).
    """

    flip: bool = True
    scales: tuple[float, ...] | None = None
    scale_range: tuple[float, float] | None = None
    max_rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self):
        if self.scales is not None and (not self.scales or min(self.scales) <= 0):
            raise ValueError(f"scales must be positive factors, got {self.scales}")
        if self.scale_range is not None:
            low, high = self.scale_range
            if not 0 < low <= high:
                raise ValueError(
                    f"scale_range must satisfy 0 < low <= high, got {self.scale_range}"
                )
        if self.max_rotation < 0:
            raise ValueError(f"max_rotation must be >= 0 degrees, got {self.max_rotation}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")


NYUD_AUGMENT = AugmentConfig(flip=True, scales=(1.0, 1.2, 1.5))
PASCAL_AUGMENT = AugmentConfig(flip=True, scale_range=(0.75, 1.25), max_rotation=20.0)
MTAN_AUGMENT = AugmentConfig(flip=True, scales=(1.0, 1.2, 1.5))
NO_AUGMENT = AugmentConfig(flip=False)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One draw of the geometric parameters (tensors or floats).

    Attributes:
        flip: whether the example is mirrored left-right.
        scale: zoom factor ``s`` (> 1 zooms in).
        angle: counter-clockwise rotation on screen, in radians.
        offset: ``(y, x)`` position, in zoomed-image pixels, of the crop's top-left corner.
    """

    flip: Any = False
    scale: Any = 1.0
    angle: Any = 0.0
    offset: Any = (0.0, 0.0)


def _affine(geometry: Geometry, in_size, crop_size, out_size) -> tf.Tensor:
    """The [8] projective transform mapping output pixel indices to input pixel indices."""
    h, w = (tf.cast(v, tf.float32) for v in in_size)
    hc, wc = (tf.cast(v, tf.float32) for v in crop_size)
    ho, wo = (tf.cast(v, tf.float32) for v in out_size)
    s = tf.cast(geometry.scale, tf.float32)
    cos, sin = (
        tf.cos(tf.cast(geometry.angle, tf.float32)),
        tf.sin(tf.cast(geometry.angle, tf.float32)),
    )
    oy, ox = (tf.cast(v, tf.float32) for v in geometry.offset)
    kx, ky = wc / wo, hc / ho
    # Continuous coordinates (pixel centres at i + 0.5): output -> zoomed crop -> input.
    dx0, dy0 = ox - s * w / 2.0, oy - s * h / 2.0
    a0, a1, a2 = cos * kx / s, -sin * ky / s, w / 2.0 + (cos * dx0 - sin * dy0) / s
    b0, b1, b2 = sin * kx / s, cos * ky / s, h / 2.0 + (sin * dx0 + cos * dy0) / s
    flip = tf.cast(geometry.flip, tf.bool)
    a0, a1, a2 = (
        tf.where(flip, -a0, a0),
        tf.where(flip, -a1, a1),
        tf.where(flip, w - a2, a2),
    )
    # Index coordinates (pixel centres at i), as ImageProjectiveTransformV3 expects.
    a2 = a2 + 0.5 * (a0 + a1) - 0.5
    b2 = b2 + 0.5 * (b0 + b1) - 0.5
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])


def _warp(maps: tf.Tensor, transform: tf.Tensor, out_size, interpolation: str, fill: float):
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=maps[None],
        transforms=transform[None],
        output_shape=tf.cast(tf.stack(out_size), tf.int32),
        fill_value=fill,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    return out[0]


def _turn_normals(normals: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    x, y, z = tf.unstack(normals, axis=-1)
    x = tf.where(tf.cast(geometry.flip, tf.bool), -x, x)
    cos, sin = (
        tf.cos(tf.cast(geometry.angle, tf.float32)),
        tf.sin(tf.cast(geometry.angle, tf.float32)),
    )
    return tf.stack([x * cos + y * sin, -x * sin + y * cos, z], axis=-1)


def apply_geometry(
    example: Mapping[str, Tensor],
    geometry: Geometry,
    output_size: Sequence[int] | None = None,
    crop_size: Sequence[int] | None = None,
) -> dict[str, tf.Tensor]:
    """Warp every map of ``example`` by ``geometry`` (see the module docstring).

    Args:
        example: ``image`` uint8 (H, W, 3) and task labels in the library's convention.
        geometry: the flip, zoom, rotation and crop offset.
        output_size: ``(height, width)`` of the result; default the crop size.
        crop_size: size of the window cut from the zoomed image; default the input size (H, W).

    Returns:
        A new dict with the same keys; maps at ``output_size``, labels in their dtypes.
    """
    image = tf.convert_to_tensor(example["image"])
    in_size = (tf.shape(image)[0], tf.shape(image)[1])
    crop_size = in_size if crop_size is None else tuple(crop_size)
    out_size = crop_size if output_size is None else tuple(output_size)
    transform = _affine(geometry, in_size, crop_size, out_size)

    linear = [tf.cast(image, tf.float32)]
    if "depth" in example:
        depth = tf.cast(example["depth"], tf.float32)
        valid = tf.cast(depth > 0, tf.float32)
        linear += [depth * valid, valid]
    if "normals" in example:
        normals = tf.cast(example["normals"], tf.float32)
        valid = tf.cast(tf.reduce_any(normals != 0, axis=-1, keepdims=True), tf.float32)
        linear += [_turn_normals(normals, geometry) * valid, valid]
    warped = _warp(tf.concat(linear, -1), transform, out_size, "BILINEAR", 0.0)

    out = dict(example)
    out["image"] = tf.cast(tf.clip_by_value(tf.round(warped[..., :3]), 0.0, 255.0), tf.uint8)
    channel = 3
    if "depth" in example:
        num, den = warped[..., channel : channel + 1], warped[..., channel + 1 : channel + 2]
        keep = den > 0.5
        depth = tf.where(keep, num / tf.where(keep, den, 1.0), 0.0)
        out["depth"] = depth / tf.cast(geometry.scale, tf.float32)
        channel += 2
    if "normals" in example:
        vec, den = warped[..., channel : channel + 3], warped[..., channel + 3 : channel + 4]
        norm = tf.norm(vec, axis=-1, keepdims=True)
        keep = (den > 0.5) & (norm > 1e-6)
        out["normals"] = tf.where(keep, vec / tf.where(keep, norm, 1.0), 0.0)

    classes = [k for k in CLASS_MAPS if k in example]
    if classes:
        stacked = tf.concat([tf.cast(example[k], tf.float32) for k in classes], -1)
        warped = _warp(stacked, transform, out_size, "NEAREST", IGNORE)
        for i, key in enumerate(classes):
            out[key] = tf.cast(warped[..., i : i + 1], tf.as_dtype(example[key].dtype))
    return out


def sample_geometry(seed: Tensor, config: AugmentConfig, in_size, crop_size=None) -> Geometry:
    """Draw a `Geometry` from ``config`` with stateless randomness keyed by ``seed`` ([2] ints)."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5))
    flip = False
    if config.flip:
        flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    scale = tf.constant(1.0)
    if config.scales:
        index = tf.random.stateless_uniform(
            [], seeds[1], minval=0, maxval=len(config.scales), dtype=tf.int32
        )
        scale = tf.gather(tf.constant(config.scales, tf.float32), index)
    elif config.scale_range:
        low, high = config.scale_range
        scale = tf.random.stateless_uniform([], seeds[1], minval=low, maxval=high)
    angle = tf.constant(0.0)
    if config.max_rotation:
        limit = math.radians(config.max_rotation)
        angle = tf.random.stateless_uniform([], seeds[2], minval=-limit, maxval=limit)
    crop = in_size if crop_size is None else crop_size
    fraction = tf.random.stateless_uniform([2], seeds[3])
    slack_y = scale * tf.cast(in_size[0], tf.float32) - tf.cast(crop[0], tf.float32)
    slack_x = scale * tf.cast(in_size[1], tf.float32) - tf.cast(crop[1], tf.float32)
    return Geometry(flip, scale, angle, (fraction[0] * slack_y, fraction[1] * slack_x))


def jitter_image(image: Tensor, seed: Tensor, config: AugmentConfig) -> tf.Tensor:
    """Photometric jitter of a uint8 image (brightness, contrast, saturation, hue), stateless."""
    if not (config.brightness or config.contrast or config.saturation or config.hue):
        return tf.convert_to_tensor(image)
    seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4))
    x = tf.cast(image, tf.float32) / 255.0
    if config.brightness:
        x = tf.image.stateless_random_brightness(x, config.brightness, seeds[0])
    if config.contrast:
        x = tf.image.stateless_random_contrast(
            x, 1.0 - config.contrast, 1.0 + config.contrast, seeds[1]
        )
    if config.saturation:
        x = tf.image.stateless_random_saturation(
            x, 1.0 - config.saturation, 1.0 + config.saturation, seeds[2]
        )
    if config.hue:
        x = tf.image.stateless_random_hue(x, config.hue, seeds[3])
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def augment(
    example: Mapping[str, Tensor],
    seed: Tensor,
    config: AugmentConfig = NYUD_AUGMENT,
    output_size: Sequence[int] | None = None,
) -> dict[str, tf.Tensor]:
    """Randomly flip, zoom, rotate, crop and jitter one example, keeping its labels consistent.

    Args:
        example: ``image`` uint8 (H, W, 3) and task labels in the library's convention.
        seed: int tensor of shape [2]; equal seeds give equal results.
        config: what to draw (see `AugmentConfig` and the presets).
        output_size: ``(height, width)`` of the result; default the input size.

    Returns:
        The augmented example (same keys and dtypes).
    """
    image = tf.convert_to_tensor(example["image"])
    in_size = (tf.shape(image)[0], tf.shape(image)[1])
    geo_seed, color_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    )
    out = apply_geometry(example, sample_geometry(geo_seed, config, in_size), output_size)
    out["image"] = jitter_image(out["image"], color_seed, config)
    return out


def resize(example: Mapping[str, Tensor], output_size: Sequence[int]) -> dict[str, tf.Tensor]:
    """Resize every map to ``output_size`` with the interpolation of its kind (no depth scaling).

    The survey's ``FixedResize``: the field of view is unchanged, so depth values stay as they are.
    """
    return apply_geometry(example, Geometry(), output_size)
