"""Named evaluation protocols at the original resolution, and PNG grids of predictions.

A protocol fixes every choice that moves a reported number, so that a score is comparable with a
paper's by construction. Two are defined (`PROTOCOLS`), and the chosen one is recorded in every
results file (``"protocol": {"name": ...}``):

* ``survey``: the code of Vandenhende et al. ("Multi-Task Learning for Dense Prediction Tasks: A
  Survey", TPAMI 2022; ``evaluation/`` and ``save_model_predictions``);
* ``invpt``: the 2022+ convention of InvPT (Ye & Xu, ECCV 2022), TaskPrompter (ICLR 2023) and
  MLoRE (CVPR 2024), which inherit the survey's evaluation code through ATRC but report
  saliency maxF, use SEISM's HED thresholds and a 0.011 edge tolerance on NYUD-v2.

Both follow the reference's order of operations (``save_model_predictions``): each image is
resized to the network's input size, the raw outputs are **activated at the network's output**
(`TaskSpec.activate`), encoded as the task stores them (`TaskSpec.saved`: class map of the
argmax, ``255 · p``, ``(n̂ + 1) · 255 / 2``), **resized to the label's resolution** (cv2's nearest
for class maps, bilinear for the rest), **truncated to 8 bits** (``astype(np.uint8)``) where the
task is saved as PNG, read back, and scored against the original labels with the task's protocol
metrics (`TaskSpec.protocol_metrics`), pooled over the dataset:

===================  ===============================  ===============================
choice               ``survey``                       ``invpt``
===================  ===============================  ===============================
saliency primary     mIoU (``validate_results``)      maxF
saliency binarised   ``pred > t``, 15 in [0.2, 0.9]   same
mIoU, absent class   IoU 0 in the mean                same
edge thresholds      99: 0.01 .. 0.99                 101: SEISM ``HED.txt``
edge odsF            best threshold (``general_ods``, no interpolation)
edge tolerance       0.0075                           0.011 NYUD-v2, 0.0075 PASCAL
===================  ===============================  ===============================

Metric ids are ``<task>_<key>`` (e.g. ``edges_ods_f``), ready for `mtl_keras.metrics.delta_mtl`
and `mtl_keras.evaluation.compare`; each task's primary metric under the protocol is
`TaskSpec.evaluation_primary`. Nothing here depends on a task's name.

The trivial baseline (each task's best constant, `TaskSpec.baseline`, fitted on training labels)
is scored under the same protocol by `trivial_baseline`, or next to the model in the same pass by
``evaluate_to_file(..., trivial_labels=...)``: its constant raw outputs go through the same
activation, encoding, resize and truncation as a network's (`ConstantNetwork`).
``mtl-keras evaluate --protocol NAME`` runs `evaluate_to_file` on a recipe's trained network.

Example:
    >>> from mtl_keras.data.real import load_examples  # doctest: +SKIP
    >>> scores = evaluate(network, load_examples("nyud", "val"), specs,  # doctest: +SKIP
    ...                   image_size=(480, 640), protocol="invpt", dataset="nyud")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtl_keras.metrics.boundary import default_thresholds, hed_thresholds
from mtl_keras.tasks import TaskSpec


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The choices of one evaluation protocol (see the module doc).

    Attributes:
        name: the protocol's name, recorded in results files.
        saliency_primary: saliency metric key used in Δ_MTL and model selection.
        saliency_thresholds: number of saliency thresholds over [0.2, 0.9].
        saliency_strict: binarise saliency with ``pred > t``.
        miou_absent: ``"zero"`` (a class absent from labels and predictions counts as IoU 0) or
            ``"skip"``.
        edge_thresholds: the edge benchmark's thresholds.
        edge_interpolate: interpolate P and R between thresholds for odsF.
        edge_max_dist: ``{dataset: tolerance}`` as a fraction of the diagonal; key ``None`` is the
            default for other datasets.
    """

    name: str
    saliency_primary: str
    saliency_thresholds: int = 15
    saliency_strict: bool = True
    miou_absent: str = "zero"
    edge_thresholds: tuple[float, ...] = tuple(default_thresholds(99))
    edge_interpolate: bool = False
    edge_max_dist: Mapping[str | None, float] = dataclasses.field(
        default_factory=lambda: {None: 0.0075}
    )

    def for_dataset(self, dataset: str | None = None, **overrides) -> ResolvedProtocol:
        """This protocol with the edge tolerance of ``dataset`` (and explicit overrides)."""
        key = dataset if dataset in self.edge_max_dist else None
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["edge_max_dist"] = float(self.edge_max_dist[key])
        fields.update(overrides)
        return ResolvedProtocol(dataset=dataset, **fields)


@dataclasses.dataclass(frozen=True)
class ResolvedProtocol:
    """A `Protocol` bound to a dataset: the object task specs' ``protocol_metrics`` receive."""

    name: str
    saliency_primary: str
    saliency_thresholds: int
    saliency_strict: bool
    miou_absent: str
    edge_thresholds: tuple[float, ...]
    edge_interpolate: bool
    edge_max_dist: float
    dataset: str | None = None

    def record(self) -> dict:
        """JSON-ready description, stored under ``"protocol"`` in results files."""
        out = dataclasses.asdict(self)
        out["edge_thresholds"] = len(self.edge_thresholds)
        return out


PROTOCOLS: dict[str, Protocol] = {
    "survey": Protocol(name="survey", saliency_primary="miou"),
    "invpt": Protocol(
        name="invpt",
        saliency_primary="max_f",
        edge_thresholds=tuple(hed_thresholds()),
        edge_max_dist={None: 0.0075, "nyud": 0.011, "pascal": 0.0075},
    ),
}


def get_protocol(name: str | Protocol, dataset: str | None = None, **overrides) -> ResolvedProtocol:
    """The protocol ``name`` (``"survey"`` or ``"invpt"``) bound to ``dataset``."""
    if isinstance(name, ResolvedProtocol):
        return dataclasses.replace(name, **overrides)
    if isinstance(name, Protocol):
        return name.for_dataset(dataset, **overrides)
    if name not in PROTOCOLS:
        raise ValueError(
            f"unknown evaluation protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}"
        )
    return PROTOCOLS[name].for_dataset(dataset, **overrides)


def resize_nearest(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """cv2's ``INTER_NEAREST`` resize of an (H, W, C) array: source index ``floor(i · in / out)``.

    (Not the half-pixel rounding of ``tf.image.resize``, which picks other pixels.)
    """
    array = np.asarray(array)
    h, w = array.shape[:2]
    rows = np.minimum(np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum(np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return array[rows][:, cols]


def resize_bilinear(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """cv2's ``INTER_LINEAR`` resize (half-pixel centres, no antialiasing) of (H, W, C)."""
    out = tf.image.resize(tf.convert_to_tensor(np.asarray(array, np.float32)), size, "bilinear")
    return np.asarray(out)


def _numpy_example(example) -> dict:
    out = {}
    for key, value in dict(example).items():
        value = value.numpy() if hasattr(value, "numpy") else value
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def store_prediction(spec: TaskSpec, activated: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """One task's activated prediction as its protocol reads it back from disk, at ``size``.

    ``encode`` at the network's output, resize (nearest or bilinear), truncate to uint8 when
    the task is saved as PNG, ``decode`` (see `mtl_keras.tasks.SavedPrediction`).
    """
    saved = spec.saved_prediction()
    stored = np.asarray(saved.encode(np.asarray(activated)), np.float32)
    if saved.interpolation == "nearest":
        stored = resize_nearest(stored, size)
    else:
        stored = resize_bilinear(stored, size)
    if saved.quantize:
        stored = np.clip(stored, 0.0, 255.0).astype(np.uint8)  # imwrite(x.astype(np.uint8))
    return saved.decode(stored)


class ProtocolEvaluator:
    """Streams examples through a network and scores them under a named protocol.

    Args:
        network: a Keras model mapping an image batch (B, H, W, 3) to ``{task: raw output}``.
        specs: ``{task: TaskSpec}`` of the tasks to score.
        image_size: the network's input ``(height, width)``.
        protocol: ``"survey"``, ``"invpt"``, or a `Protocol`.
        dataset: ``"nyud"``, ``"pascal"``, ... (selects the edge tolerance), or None.
        **overrides: `ResolvedProtocol` fields to override (e.g. ``edge_max_dist=0.011``); the
            record in the results file shows them.
    """

    def __init__(
        self,
        network,
        specs: Mapping[str, TaskSpec],
        *,
        image_size: Sequence[int],
        protocol: str | Protocol = "survey",
        dataset: str | None = None,
        **overrides,
    ):
        self.specs = dict(specs)
        self.image_size = tuple(int(v) for v in image_size)
        self.protocol = get_protocol(protocol, dataset, **overrides)
        self.settings = {**self.protocol.record(), "image_size": list(self.image_size)}
        self.metrics = {t: spec.evaluation_metrics(self.protocol) for t, spec in self.specs.items()}
        self.images = 0
        self.scored = dict.fromkeys(self.specs, 0)
        self._predict = tf.function(
            lambda x: network(x, training=False),
            input_signature=[tf.TensorSpec((1, *self.image_size, 3), tf.float32)],
        )

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions ``{task: (H, W, C)}`` at the image's own size, as the protocol reads them."""
        image = np.asarray(image)
        size = image.shape[:2]
        x = tf.image.resize(tf.cast(image[None], tf.float32), self.image_size, "bilinear")
        raw = self._predict(x)
        return {
            task: store_prediction(spec, np.asarray(spec.activate(raw[task]))[0], size)
            for task, spec in self.specs.items()
        }

    def primary(self) -> dict[str, bool]:
        """``{metric_id: higher_is_better}`` of each task's primary metric under the protocol."""
        out = {}
        for spec in self.specs.values():
            key, higher = spec.evaluation_primary(self.protocol)
            out[spec.metric_id(key)] = higher
        return out

    def update(self, example: Mapping) -> None:
        """Score one example ``{"image": (H, W, 3), task: label (H, W, C), ...}``."""
        example = _numpy_example(example)
        predictions = self.predict(example["image"])
        self.images += 1
        for task, metrics in self.metrics.items():
            spec, label, pred = self.specs[task], np.asarray(example[task]), predictions[task]
            if spec.score_labelled_only and np.all(label == spec.ignore_value):
                continue
            self.scored[task] += 1
            for metric in metrics:
                metric.update_state(label[None], pred[None])

    def result(self) -> dict[str, float]:
        """``{"<task>_<key>": value}`` over all examples seen."""
        scores: dict[str, float] = {}
        for task, metrics in self.metrics.items():
            for metric in metrics:
                for key, value in metric.result().items():
                    scores[f"{task}_{key}"] = float(value)
        return scores

    def counts(self) -> dict[str, int]:
        """How many images were seen, and ``<task>_images`` for tasks that skip unlabelled ones."""
        counts = {"images": self.images}
        for task, spec in self.specs.items():
            if spec.score_labelled_only:
                counts[f"{task}_images"] = self.scored[task]
        return counts


#: The former name of `ProtocolEvaluator` (its default protocol is the survey's).
SurveyEvaluator = ProtocolEvaluator


class ConstantNetwork:
    """The trivial predictors as a network: ``{task: constant raw output}`` at the input's size.

    Args:
        constants: ``{task: raw prediction of shape (channels,)}``, e.g. `trivial_constants`.
    """

    def __init__(self, constants: Mapping[str, np.ndarray]):
        self.constants = {
            t: tf.constant(np.asarray(c, np.float32).reshape(-1)) for t, c in constants.items()
        }

    def __call__(self, images, training: bool = False) -> dict[str, tf.Tensor]:
        size = tf.shape(images)[:3]
        return {
            t: tf.broadcast_to(c, tf.concat([size, tf.shape(c)], 0))
            for t, c in self.constants.items()
        }


def trivial_constants(specs: Mapping[str, TaskSpec], train_labels: Mapping) -> dict:
    """``{task: constant raw prediction}`` fitted on ``train_labels`` (`TaskSpec.baseline`: the
    majority class, the mean depth, ...), as `mtl_keras.training.baselines.trivial_baseline`
    fits them."""
    return {
        t: np.asarray(spec.baseline(np.asarray(train_labels[t])), np.float32)
        for t, spec in specs.items()
    }


def evaluate(
    network,
    examples: Iterable[Mapping],
    specs: Mapping[str, TaskSpec],
    *,
    image_size: Sequence[int],
    max_examples: int | None = None,
    **options,
) -> dict[str, float]:
    """Score ``network`` on unbatched original-resolution ``examples`` (see the module doc).

    Args:
        network: a Keras model returning ``{task: raw output}``.
        examples: dicts with ``image`` uint8 (H, W, 3) and labels, e.g.
            `mtl_keras.data.real.load_examples`.
        specs: ``{task: TaskSpec}`` of the tasks to score.
        image_size: the network's input ``(height, width)``.
        max_examples: stop after this many examples (None: all).
        **options: `ProtocolEvaluator` options (``protocol``, ``dataset``, overrides such as
            ``edge_max_dist``).

    Returns:
        ``{"<task>_<key>": value}``.
    """
    return _run(network, examples, specs, image_size, max_examples, options)[0].result()


def trivial_baseline(
    specs: Mapping[str, TaskSpec],
    train_labels: Mapping,
    examples: Iterable[Mapping],
    *,
    image_size: Sequence[int],
    max_examples: int | None = None,
    **options,
) -> dict[str, float]:
    """The trivial baseline under a protocol: `evaluate` of the best constants
    (`trivial_constants` of ``train_labels``) as a network (`ConstantNetwork`).

    Args:
        specs: ``{task: TaskSpec}`` of the tasks to score.
        train_labels: ``{task: training labels (N, H, W, C)}`` the constants are fitted on (a
            `mtl_keras.data.DataBundle`'s ``train_labels``).
        examples, image_size, max_examples, **options: as `evaluate`.

    Returns:
        ``{"<task>_<key>": value}`` with the protocol's metric ids.
    """
    network = ConstantNetwork(trivial_constants(specs, train_labels))
    return evaluate(
        network, examples, specs, image_size=image_size, max_examples=max_examples, **options
    )


def _run(
    network, examples, specs, image_size, max_examples, options, trivial_labels=None
) -> list[ProtocolEvaluator]:
    """The evaluator of ``network`` over ``examples`` (one pass), and with ``trivial_labels``
    the trivial baseline's evaluator after it."""
    networks = [network]
    if trivial_labels is not None:
        networks.append(ConstantNetwork(trivial_constants(specs, trivial_labels)))
    evaluators = [ProtocolEvaluator(n, specs, image_size=image_size, **options) for n in networks]
    for i, example in enumerate(examples):
        if max_examples is not None and i >= max_examples:
            break
        example = _numpy_example(example)
        for evaluator in evaluators:
            evaluator.update(example)
    return evaluators


def evaluate_to_file(
    network,
    examples: Iterable[Mapping],
    specs: Mapping[str, TaskSpec],
    path: str | os.PathLike,
    *,
    name: str,
    image_size: Sequence[int],
    baselines=None,
    max_examples: int | None = None,
    trivial_labels: Mapping | None = None,
    **options,
) -> dict:
    """`evaluate`, then write ``path`` (``protocol.json``) with params, FLOPs, Δ_MTL and the
    protocol's record (its name and every choice) under ``"protocol"``.

    The file has the format of `mtl_keras.metrics.write_results`, read by
    `mtl_keras.evaluation.compare`. Δ_MTL is added when ``baselines`` (single-task result files
    or a ``{metric_id: value}`` mapping) covers every task's primary metric under the protocol.
    With ``trivial_labels`` (training labels ``{task: (N, H, W, C)}``), ``"trivial_baseline"``
    holds the best constants' scores under the same protocol on the same examples
    (`trivial_baseline`, computed in the same pass), the row ``compare --trivial`` shows.
    """
    from mtl_keras.metrics import (
        count_flops,
        count_params,
        delta_mtl,
        load_baselines,
        write_results,
    )

    evaluator, *trivial = _run(
        network, examples, specs, image_size, max_examples, options, trivial_labels
    )
    scores = evaluator.result()
    extra = {
        "params": count_params(network)["params"],
        "flops": count_flops(network, (*image_size, 3)),
        "protocol": evaluator.settings,
        "counts": evaluator.counts(),
    }
    if trivial:
        extra["trivial_baseline"] = trivial[0].result()
    if baselines is not None:
        base = baselines if isinstance(baselines, Mapping) else load_baselines(baselines)
        extra["delta_mtl"] = delta_mtl(scores, base, evaluator.primary())
    write_results(path, name, scores, **extra)
    return {"metrics": scores, **extra}


def prediction_grid(
    network,
    images: np.ndarray,
    labels: Mapping[str, np.ndarray],
    specs: Mapping[str, TaskSpec],
    path: str | os.PathLike,
) -> str:
    """Write a PNG grid: one row per image; columns image, then each task's label and prediction.

    Args:
        network: a Keras model returning ``{task: raw output}`` at the input resolution.
        images: uint8 (N, H, W, 3) at the network's input size.
        labels: ``{task: (N, H, W, C)}`` in the library's label convention.
        specs: ``{task: TaskSpec}``; each spec's ``colorize`` draws its label and prediction.
        path: the PNG file to write.

    Returns:
        ``path``.
    """
    from mtl_keras.data.preview import preview_grid

    images = np.asarray(images)
    raw = network(tf.convert_to_tensor(images, tf.float32), training=False)
    columns: dict[str, np.ndarray] = {"image": images}
    colorize = {}
    size = images.shape[1:3]
    for task, spec in specs.items():
        pred = tf.image.resize(tf.cast(raw[task], tf.float32), size, "bilinear")
        columns[task] = np.asarray(labels[task])
        columns[f"{task} pred"] = np.asarray(spec.activate(pred))
        colorize[task] = colorize[f"{task} pred"] = spec.colorize
    return preview_grid(columns, os.fspath(path), colorize=colorize)
