"""Label-consistent augmentation of a dict example with TensorFlow ops (usable in ``tf.data.map``).

An example is ``{"image": uint8 (H, W, 3), task: label, ...}`` in the library's label convention.
Geometry is applied to every map with one resampling (`augment`): horizontal flip, zoom by a scale
``s`` about the image centre, rotation by ``θ`` about the centre, and a crop (at a random position)
of the original size from the zoomed image, padded where the zoomed image is smaller; the result
is sampled at ``output_size``. ``image`` is resampled bilinearly, padded with 0, then optionally
jittered (brightness, contrast, saturation, hue; the image only).

Each label keeps its meaning by its task's `~mtl_keras.tasks.TaskSpec` (its resolved
``label_geometry`` and its ``flip_label``, ``rotate_label`` and ``scale_label``); nothing here
depends on a task's name:

* nearest maps (``resample="nearest"``: the class maps ``semseg`` and ``human_parts``, the binary
  maps ``edges`` and ``saliency``) are copied pixel by pixel and padded with ``fill`` (their
  ignore value, 255); their value rules apply before resampling and leave ignored pixels alone;
* linear maps are resampled bilinearly; ``masked`` ones (``depth``, ``normals``) over valid
  pixels only (normalised convolution: the interpolation of ``label · valid`` divided by that of
  ``valid``, invalid where less than half the weight is valid) and padded with 0 (invalid);
  ``vector`` values (``normals``) are turned with the image before resampling (flip negates
  ``x``; rotating the image counter-clockwise on screen by ``θ`` maps ``(x, y)`` to
  ``(x cos θ + y sin θ, −x sin θ + y cos θ)`` in the image frame, x right and y down, as the
  survey's ``ScaleNRotate``), ``unit`` ones renormalised after; then values are multiplied by
  ``s ** scale_power``: depth is **divided by s**, since zooming in by ``s`` makes the scene look
  ``s`` times closer (Vandenhende et al., TPAMI 2022, issue #1 of their code; MTAN's
  RandomScaleCrop). Linear maps come back as float32, nearest maps in their dtype.

A key is a task when ``tasks`` (a ``{name: TaskSpec}`` mapping, or TaskSpecs and names) names it
or, failing that, when it is a registered task name (`mtl_keras.tasks.register`; its geometry does
not depend on factory options). Other keys (e.g. ``id``) pass through, but a map of the image's
height and width that is no task is refused: it would no longer line up with the image.

Randomness is stateless: the same ``seed`` (an int tensor of shape [2]) gives the same augmentation
in eager mode, in ``tf.function`` and in ``tf.data``.

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tensorflow as tf

from mtl_keras import tasks as tasks_lib
from mtl_keras.tasks import TaskSpec

Tensor = Any
Tasks = Mapping[str, TaskSpec] | Iterable[TaskSpec | str] | None


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


def label_specs(example: Mapping[str, Tensor], tasks: Tasks = None) -> dict[str, TaskSpec]:
    """``{key: TaskSpec}`` of the keys of ``example`` that are task labels.

    A key's spec is the one ``tasks`` gives (a ``{name: TaskSpec}`` mapping, or TaskSpecs and
    registered names), else that of the registered task of that name; other keys are not labels.
    """
    if tasks is None:
        given = {}
    elif isinstance(tasks, Mapping):
        given = dict(tasks)
    else:
        given = tasks_lib.resolve(tasks)
    specs = {}
    for key in example:
        if key == "image":
            continue
        if key in given:
            specs[key] = given[key]
        elif key in tasks_lib.TASKS:
            specs[key] = tasks_lib.get(key)
        elif _is_map_of(example[key], example.get("image")):
            # it would pass through unwarped, no longer aligned with the image
            raise ValueError(
                f"{key!r} is a map of the image's size but no task: pass its TaskSpec in tasks= "
                "or register it (mtl_keras.tasks.register) so that it is flipped, scaled and "
                "cropped with the image"
            )
    return specs


def _is_map_of(value, image) -> bool:
    """Whether ``value`` has ``image``'s (known) height and width as its first two dims."""
    if image is None or not hasattr(value, "shape") or not hasattr(image, "shape"):
        return False
    shape, size = tf.TensorShape(value.shape), tf.TensorShape(image.shape)
    if shape.rank is None or shape.rank < 2 or size.rank != 3:
        return False
    return None not in size[:2].as_list() and shape[:2].as_list() == size[:2].as_list()


def _turned(spec: TaskSpec, label: tf.Tensor, geometry: Geometry) -> tf.Tensor:
    """The label's values turned with the image: flipped (where the draw flips), then rotated."""
    label = tf.where(tf.cast(geometry.flip, tf.bool), spec.flip_label(label), label)
    return spec.rotate_label(label, geometry.angle)


def apply_geometry(
    example: Mapping[str, Tensor],
    geometry: Geometry,
    output_size: Sequence[int] | None = None,
    crop_size: Sequence[int] | None = None,
    *,
    tasks: Tasks = None,
) -> dict[str, tf.Tensor]:
    """Warp every map of ``example`` by ``geometry`` (see the module docstring).

    Args:
        example: ``image`` uint8 (H, W, 3) and task labels in the library's convention.
        geometry: the flip, zoom, rotation and crop offset.
        output_size: ``(height, width)`` of the result; default the crop size.
        crop_size: size of the window cut from the zoomed image; default the input size (H, W).
        tasks: the TaskSpecs of the labels (``{name: spec}``, or specs and names); keys not given
            here are looked up in the task registry (see `label_specs`).

    Returns:
        A new dict with the same keys; maps at ``output_size``, labels in their dtypes.
    """
    image = tf.convert_to_tensor(example["image"])
    in_size = (tf.shape(image)[0], tf.shape(image)[1])
    crop_size = in_size if crop_size is None else tuple(crop_size)
    out_size = crop_size if output_size is None else tuple(output_size)
    transform = _affine(geometry, in_size, crop_size, out_size)
    specs = label_specs(example, tasks)

    # One warp per (interpolation, padding): the channels of every map that shares them, stacked.
    groups: dict[tuple[str, float], list[tf.Tensor]] = {("BILINEAR", 0.0): []}
    where: dict[str, tuple[tuple[str, float], int, int]] = {}

    def stack(key, maps, interpolation, fill):
        channels = groups.setdefault((interpolation, fill), [])
        start = sum(int(c.shape[-1]) for c in channels)
        channels.append(maps)
        where[key] = ((interpolation, fill), start, start + int(maps.shape[-1]))

    stack("image", tf.cast(image, tf.float32), "BILINEAR", 0.0)
    for key, spec in specs.items():
        rule = spec.label_geometry
        label = tf.cast(example[key], tf.float32)
        if rule.resample == "nearest":
            values = spec.scale_label(_turned(spec, label, geometry), geometry.scale)
            if spec.ignore_value is not None:  # ignored pixels keep the ignore value
                values = tf.where(label == float(spec.ignore_value), label, values)
            stack(key, values, "NEAREST", rule.fill)
        elif rule.masked:
            valid = _valid(spec, label)
            masked = tf.concat([_turned(spec, label, geometry) * valid, valid], -1)
            stack(key, masked, "BILINEAR", 0.0)
        else:
            stack(key, _turned(spec, label, geometry), "BILINEAR", rule.fill)
    warped = {
        group: _warp(tf.concat(maps, -1), transform, out_size, group[0], group[1])
        for group, maps in groups.items()
    }

    def take(key):
        group, start, stop = where[key]
        return warped[group][..., start:stop]

    out = dict(example)
    out["image"] = tf.cast(tf.clip_by_value(tf.round(take("image")), 0.0, 255.0), tf.uint8)
    for key, spec in specs.items():
        rule, maps = spec.label_geometry, take(key)
        if rule.resample == "nearest":
            out[key] = tf.cast(maps, tf.as_dtype(example[key].dtype))
            continue
        if rule.masked:
            maps, den = maps[..., :-1], maps[..., -1:]
            keep = den > 0.5
        if rule.unit:  # the weights' sum cancels on renormalising
            norm = tf.norm(maps, axis=-1, keepdims=True)
            keep = (keep & (norm > 1e-6)) if rule.masked else norm > 1e-6
            maps = tf.where(keep, maps / tf.where(keep, norm, 1.0), 0.0)
        elif rule.masked:
            maps = tf.where(keep, maps / tf.where(keep, den, 1.0), 0.0)
        out[key] = spec.scale_label(maps, geometry.scale)
    return out


def _valid(spec: TaskSpec, label: tf.Tensor) -> tf.Tensor:
    """float32 (H, W, 1): 1 where the label is valid (the spec's ``valid_mask``, else any
    channel non-zero)."""
    if spec.valid_mask is not None:
        mask = spec.valid_mask(label[None])[0]
    else:
        mask = tf.reduce_any(label != 0, axis=-1)
    return tf.cast(mask, tf.float32)[..., None]


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
    *,
    tasks: Tasks = None,
) -> dict[str, tf.Tensor]:
    """Randomly flip, zoom, rotate, crop and jitter one example, keeping its labels consistent.

    Args:
        example: ``image`` uint8 (H, W, 3) and task labels in the library's convention.
        seed: int tensor of shape [2]; equal seeds give equal results.
        config: what to draw (see `AugmentConfig` and the presets).
        output_size: ``(height, width)`` of the result; default the input size.
        tasks: the TaskSpecs of the labels; default the registered tasks of the example's keys
            (see `label_specs`).

    Returns:
        The augmented example (same keys and dtypes).
    """
    image = tf.convert_to_tensor(example["image"])
    in_size = (tf.shape(image)[0], tf.shape(image)[1])
    geo_seed, color_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    )
    geometry = sample_geometry(geo_seed, config, in_size)
    out = apply_geometry(example, geometry, output_size, tasks=tasks)
    out["image"] = jitter_image(out["image"], color_seed, config)
    return out


def resize(
    example: Mapping[str, Tensor], output_size: Sequence[int], *, tasks: Tasks = None
) -> dict[str, tf.Tensor]:
    """Resize every map to ``output_size`` with the interpolation of its task (no value scaling).

    The survey's ``FixedResize``: the field of view is unchanged, so depth values stay as they are.
    """
    return apply_geometry(example, Geometry(), output_size, tasks=tasks)
