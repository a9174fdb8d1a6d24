"""The `TaskSpec`: every fact about a dense prediction task, declared once.

A task is described by a frozen dataclass holding its output channels, its loss, its streaming
metrics with the direction in which each is better, its label encoding and ignore value, how its raw
network output is activated and served, how a trivial baseline predicts it, how its label moves
under augmentation and how it is drawn. Nothing outside a TaskSpec switches on a task name: the
trainer, the evaluator, the exporter, the augmentation, the TFDS builders, the previews and the
TensorBoard callbacks only call the functions and read the facts stored here (``interpolation``,
`LabelGeometry` and the ``flip_label`` / ``rotate_label`` / ``scale_label`` methods for
augmentation, ``colorize`` for previews, `SavedPrediction` and ``protocol_metrics`` for the
evaluation protocols, ``feature`` for TFDS).

A new task needs only what it does not share with a plain continuous map: leaving out
``interpolation``, ``ignore_value``, ``geometry`` and ``colorize`` gives a bilinearly resampled
map, padded with 0, whose values do not change under flip, rotation or zoom, drawn by
`mtl_keras.tasks.colors.colorize_map`. Register its factory with `mtl_keras.tasks.register` so
that names, configs and recipes find it, or pass the TaskSpec itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from mtl_keras.tasks.colors import colorize_map

Tensor = Any


_RESAMPLE = {"nearest": "nearest", "linear": "linear", "bilinear": "linear"}


@dataclasses.dataclass(frozen=True)
class LabelGeometry:
    """How a label map moves under flip, zoom, rotation and crop (used by `mtl_keras.data.augment`).

    The augmentation moves the pixels of every map with one resampling; these facts say how a
    label's map is resampled and padded, and how its *values* change with the image (the
    `TaskSpec` methods ``flip_label``, ``rotate_label`` and ``scale_label`` apply them). The
    defaults fit a new continuous scalar task: bilinear, padded with 0, values unchanged.

    Attributes:
        resample: ``"nearest"`` (class, index and binary maps: values are copied, never blended)
            or ``"linear"`` (``"bilinear"`` is the same; continuous maps; with ``masked``, over
            valid pixels only, as a normalised convolution). Default None: the spec's
            ``interpolation`` (``"nearest"`` or ``"bilinear"``).
        fill: value of pixels that come from outside the image. Default None: the spec's
            ``ignore_value`` for nearest maps (0 if it has none), 0 for linear maps. Masked maps
            are always padded with 0 (invalid).
        masked: the spec's ``valid_mask`` (default: any channel non-zero) marks the valid pixels;
            resampling averages valid pixels only, pixels with less than half valid weight
            become invalid (all 0). Default False.
        vector: channels 0 and 1 are an image-plane vector (x right, y down): a flip negates x
            and a rotation by θ on screen turns ``(x, y)`` into
            ``(x cos θ + y sin θ, −x sin θ + y cos θ)``; further channels are left as they are.
            Default False.
        unit: renormalise the vector of all channels to unit length after resampling (normals).
            Default False.
        scale_power: values are multiplied by ``s ** scale_power`` for a zoom by ``s``: depth −1
            (zooming in brings the scene closer), optical flow in pixels +1, others 0 (default).
    """

    resample: str | None = None
    fill: float | None = None
    masked: bool = False
    vector: bool = False
    unit: bool = False
    scale_power: float = 0.0

    def __post_init__(self):
        if self.resample is not None and self.resample not in _RESAMPLE:
            raise ValueError(
                f"LabelGeometry.resample must be 'nearest', 'linear' or 'bilinear' (or None for "
                f"the task's interpolation), got {self.resample!r}"
            )


@dataclasses.dataclass(frozen=True)
class SavedPrediction:
    """How the survey's code stores a prediction before scoring it (``save_model_predictions``).

    The activated prediction at the network's output is encoded (``encode``, e.g. the class map
    of an argmax, ``255 · p``, ``(n + 1) · 255 / 2``), resized to the label's resolution with
    ``interpolation`` (cv2: nearest for class maps, bilinear for the rest), truncated to 8 bits
    when ``quantize`` (``astype(np.uint8)`` before ``imwrite``), and read back with ``decode``
    into what the task's protocol metrics consume.

    Attributes:
        encode: activated ``(H, W, C)`` -> float map in storage units.
        interpolation: ``"nearest"`` or ``"bilinear"``.
        quantize: truncate to uint8 as a PNG file does.
        decode: stored map -> metric input ``(H, W, C')``.
    """

    encode: Callable[[np.ndarray], np.ndarray] = lambda x: x
    interpolation: str = "bilinear"
    quantize: bool = False
    decode: Callable[[np.ndarray], np.ndarray] = lambda x: x


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Declarative description of one dense prediction task.

    Attributes:
        name: canonical task name (e.g. ``"semseg"``); it keys model outputs, labels and logs.
        channels: number of raw output channels the network predicts.
        label_channels: number of channels of the label map (H, W, label_channels).
        label_dtype: numpy/TF dtype name of the stored label.
        loss: ``loss(label, raw_prediction, *, count_mean=identity) -> scalar``, averaged over the
            valid pixels of the batch; ``count_mean`` averages a count over replicas (see
            :mod:`mtl_keras.tasks.losses`).
        metrics: factory returning fresh streaming ``keras.metrics.Metric`` objects; each
            returns a dict of scalars from ``result()``.
        higher_is_better: direction of every reported metric key, e.g. ``{"miou": True}``.
        primary_metric: the metric key used in Δ_MTL and model selection.
        activate: maps the raw prediction to the quantity the metrics consume (probabilities,
            unit normals, metric depth).
        serve: maps the raw prediction (already at the output size) to the named serving outputs.
        interpolation: how a label map of this task is resized: ``"nearest"`` for class and
            index maps, ``"bilinear"`` (default) for continuous maps. The augmentation resamples
            with it unless ``geometry.resample`` says otherwise.
        ignore_value: label value meaning "do not supervise", or None (default; depth and normals
            use 0 for invalid pixels). Nearest maps are padded with it under augmentation.
        num_classes: class count for classification tasks, else None.
        class_names: optional names of the classes.
        baseline: ``baseline(train_labels) -> constant raw prediction of shape (channels,)``: the
            trivial predictor fitted on training labels (majority class, mean depth, ...).
        colorize: ``colorize(array (H, W, C)) -> uint8 (H, W, 3)`` for labels and activated
            predictions alike: what previews, TensorBoard images and prediction grids draw.
            Default `mtl_keras.tasks.colors.colorize_map` (a colour ramp for one channel, a
            colour wheel for two, the channel maximum for more).
        geometry: how the label moves under flip, zoom, rotation and crop (`LabelGeometry`; the
            default, a plain map resampled with ``interpolation`` whose values do not change, fits
            most scalar tasks). Read it resolved through :attr:`label_geometry`; the
            augmentation calls :meth:`flip_label`, :meth:`rotate_label` and :meth:`scale_label`,
            which a TaskSpec subclass may override for a rule ``LabelGeometry`` cannot express
            (e.g. swapping left and right keypoint channels under a flip).
        feature: TFDS encoding of the label: ``"png8"`` (uint8 PNG) or ``"float32"`` (a
            zlib-compressed float32 tensor).
        saved: how an evaluation protocol stores and reads back a prediction
            (`SavedPrediction`); None resizes the activated map with ``interpolation``.
        protocol_metrics: ``protocol_metrics(protocol) -> [metric]``: the metrics of a named
            evaluation protocol (`mtl_keras.evaluation.protocol.Protocol`); None uses ``metrics``.
        protocol_primary: ``protocol_primary(protocol) -> metric key`` used in Δ_MTL and model
            selection under that protocol; None uses ``primary_metric``.
        score_labelled_only: a protocol skips images whose label is entirely ``ignore_value``
            (the survey scores human parts on images with people only).
        valid_mask: ``valid_mask(label (B, H, W, C)) -> bool (B, H, W)``: the pixels the loss
            supervises (the loss uses the same function); None: every pixel.
        options: the keyword arguments of the registered factory that built this spec
            (``tasks.get(name, **options)``): with ``name`` they are the spec's config, from which
            a saved model rebuilds it (:meth:`get_config`, ``tasks.from_config``).
    """

    name: str
    channels: int
    label_channels: int
    label_dtype: str
    loss: Callable[[Tensor, Tensor], Tensor]
    metrics: Callable[[], list]
    higher_is_better: Mapping[str, bool]
    primary_metric: str
    activate: Callable[[Tensor], Tensor]
    serve: Callable[[Tensor], dict[str, Tensor]]
    baseline: Callable[[np.ndarray], np.ndarray]
    interpolation: str = "bilinear"
    ignore_value: int | None = None
    colorize: Callable[[np.ndarray], np.ndarray] = colorize_map
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    geometry: LabelGeometry = LabelGeometry()
    feature: str = "float32"
    saved: SavedPrediction | None = None
    protocol_metrics: Callable[[Any], list] | None = None
    protocol_primary: Callable[[Any], str] | None = None
    score_labelled_only: bool = False
    valid_mask: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self):
        if self.interpolation not in ("nearest", "bilinear"):
            raise ValueError(
                f"task {self.name!r}: interpolation must be 'nearest' or 'bilinear', got "
                f"{self.interpolation!r}"
            )

    # ------------------------------------------------------------ augmentation

    @property
    def label_geometry(self) -> LabelGeometry:
        """`geometry` with its defaults resolved: ``resample`` is ``"nearest"`` or ``"linear"``
        and ``fill`` a float.

        Example:
            >>> from mtl_keras.tasks import get
            >>> get("semseg").label_geometry.fill, get("depth").label_geometry.resample
            (255.0, 'linear')
        """
        geometry = self.geometry
        resample = _RESAMPLE[geometry.resample or self.interpolation]
        fill = geometry.fill
        if fill is None:
            nearest_fill = 0.0 if self.ignore_value is None else self.ignore_value
            fill = nearest_fill if resample == "nearest" else 0.0
        return dataclasses.replace(geometry, resample=resample, fill=float(fill))

    def flip_label(self, label: Tensor) -> tf.Tensor:
        """The values of a float32 label map ``(H, W, C)`` whose image is mirrored left-right.

        The augmentation mirrors the pixels; this only changes what they hold: a ``vector``
        label negates channel 0 (x), any other label is returned unchanged (the default). Runs
        inside ``tf.data`` and ``tf.function``, so it uses TensorFlow ops.

        Example:
            >>> from mtl_keras.tasks import get
            >>> get("normals").flip_label(tf.constant([[[0.6, 0.0, 0.8]]])).numpy().tolist()
            [[[-0.6000000238418579, 0.0, 0.800000011920929]]]
        """
        label = tf.convert_to_tensor(label)
        if not self.label_geometry.vector:
            return label
        return tf.concat([-label[..., :1], label[..., 1:]], axis=-1)

    def rotate_label(self, label: Tensor, angle: Tensor) -> tf.Tensor:
        """The values of a float32 label map whose image is turned by ``angle`` radians
        counter-clockwise on screen: a ``vector`` label's ``(x, y)`` (x right, y down) becomes
        ``(x cos θ + y sin θ, −x sin θ + y cos θ)``; any other label is unchanged (the default)."""
        label = tf.convert_to_tensor(label)
        if not self.label_geometry.vector:
            return label
        angle = tf.cast(angle, tf.float32)
        cos, sin = tf.cos(angle), tf.sin(angle)
        x, y = label[..., 0], label[..., 1]
        turned = tf.stack([x * cos + y * sin, -x * sin + y * cos], axis=-1)
        return tf.concat([turned, label[..., 2:]], axis=-1)

    def scale_label(self, label: Tensor, scale: Tensor) -> tf.Tensor:
        """The values of a float32 label map zoomed by ``scale`` (> 1 zooms in): multiplied by
        ``scale ** geometry.scale_power``; unchanged for the default power 0.

        Example:
            >>> from mtl_keras.tasks import get
            >>> float(get("depth").scale_label(tf.constant(3.0), 1.5))
            2.0
        """
        label = tf.convert_to_tensor(label)
        power = float(self.label_geometry.scale_power)
        if power == 0:
            return label
        scale = tf.cast(scale, label.dtype)
        factor = scale if abs(power) == 1 else scale ** abs(power)
        return label * factor if power > 0 else label / factor

    # ---------------------------------------------------------------- checking

    def count_valid_pixels(self, label) -> tf.Tensor:
        """The number of pixels of a label batch ``(B, H, W, C)`` that the loss supervises.

        An int32 scalar, in graph or eager mode: 0 for a batch the loss gets nothing from (all
        pixels ignored, no valid depth, no non-zero normal).

        Example:
            >>> from mtl_keras.tasks import get
            >>> int(get("semseg", num_classes=3).count_valid_pixels([[[[0], [255], [2]]]]))
            2
        """
        label = tf.convert_to_tensor(label)
        if self.valid_mask is None:
            return tf.size(label[..., 0], out_type=tf.int32)
        return tf.reduce_sum(tf.cast(self.valid_mask(label), tf.int32))

    def check_label(self, label) -> None:
        """Refuse a label map ``(H, W, C)`` or batch ``(B, H, W, C)`` the loss would misread.

        Checks, eagerly (NumPy arrays or eager tensors): the channel count, that float labels are
        finite, and for classification tasks that every class id not ``ignore_value`` lies in
        ``0 .. num_classes - 1`` (the loss would otherwise train on a class that does not exist).

        Raises:
            ValueError: naming the task, what was found and how to fix it.
            TypeError: for a symbolic tensor (call it on concrete labels, e.g. in a data loader).

        Example:
            >>> from mtl_keras.tasks import get
            >>> get("semseg", num_classes=3).check_label(np.array([[[0], [255], [2]]]))
        """
        if tf.is_tensor(label) and not hasattr(label, "numpy"):
            raise TypeError(
                f"task {self.name!r}: check_label runs on concrete labels (NumPy arrays or eager "
                "tensors), not on a symbolic tensor; call it where the data is loaded"
            )
        array = np.asarray(label)
        if array.ndim not in (3, 4) or array.shape[-1] != self.label_channels:
            raise ValueError(
                f"task {self.name!r}: a label is (H, W, {self.label_channels}) or (B, H, W, "
                f"{self.label_channels}), got shape {array.shape}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            blank = self.ignore_value if self.ignore_value is not None else 0
            raise ValueError(
                f"task {self.name!r}: the label holds {int((~np.isfinite(array)).sum())} NaN or "
                f"inf value(s); mark pixels without a label with {blank} instead"
            )
        if self.num_classes is not None:
            self._check_class_ids(array[..., 0])

    def _check_class_ids(self, ids: np.ndarray) -> None:
        labelled = (
            np.ones(ids.shape, bool) if self.ignore_value is None else ids != self.ignore_value
        )
        bad = labelled & ((ids < 0) | (ids >= self.num_classes))
        if ids.dtype.kind == "f":
            bad |= labelled & (ids != np.floor(ids))
        if not bad.any():
            return
        found = np.unique(ids[bad])
        shown = ", ".join(
            f"{v:g}" if isinstance(v, float) else str(v) for v in found[:5].tolist()
        ) + (", ..." if len(found) > 5 else "")
        ignore = "" if self.ignore_value is None else f", {self.ignore_value} = ignore"
        suggestion = int(max(found.max(), 0)) + 1
        raise ValueError(
            f"task {self.name!r}: the label holds class id(s) {shown} at {int(bad.sum())} "
            f"pixel(s), but the task has {self.num_classes} classes (ids 0..{self.num_classes - 1}"
            f"{ignore}); relabel those pixels or raise num_classes (e.g. --set "
            f'\'task_options={{"{self.name}": {{"num_classes": {suggestion}}}}}\')'
        )

    def evaluation_metrics(self, protocol) -> list:
        """Fresh metrics of this task under an evaluation protocol."""
        if self.protocol_metrics is None:
            return self.metrics()
        return self.protocol_metrics(protocol)

    def evaluation_primary(self, protocol) -> tuple[str, bool]:
        """``(metric key, higher is better)`` of this task's primary metric under a protocol."""
        key = (
            self.primary_metric
            if self.protocol_primary is None
            else self.protocol_primary(protocol)
        )
        return key, self.higher_is_better[key]

    def saved_prediction(self) -> SavedPrediction:
        """`saved`, or a plain resize of the activated map with the label's interpolation."""
        if self.saved is not None:
            return self.saved
        return SavedPrediction(interpolation=self.interpolation)

    def get_config(self) -> dict:
        """``{"name": ..., "options": {...}}``: what ``tasks.from_config`` rebuilds it from."""
        return {"name": self.name, "options": _plain(self.options)}

    def metric_id(self, key: str) -> str:
        """The flat log key of one metric of this task, e.g. ``"semseg_miou"``."""
        return f"{self.name}_{key}"

    def directions(self) -> dict[str, bool]:
        """``{metric_id: higher_is_better}`` over all metrics of this task."""
        return {self.metric_id(k): v for k, v in self.higher_is_better.items()}


def _plain(value):
    """JSON-friendly copy of factory options (tuples become lists, numbers stay numbers)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
