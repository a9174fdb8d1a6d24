"""Survey-style evaluation at the original resolution, and PNG grids of predictions.

The protocol of Vandenhende et al. ("Multi-Task Learning for Dense Prediction Tasks: A Survey",
TPAMI 2022; ``evaluation/`` of their code): each image is resized to the network's input size,
the raw predictions are resized back (bilinearly) to the image's original size, activated, and
scored against the original labels, with every metric pooled over the dataset:

* ``semseg``: mIoU over the confusion matrix of the set (`mtl_keras.metrics.MeanIoU`);
* ``human_parts``: the same, on images that contain people only (images whose label is all 255
  are skipped; ``human_parts_images`` counts the others);
* ``depth``: RMSE (and abs-rel, log-RMSE) over all valid pixels of the set;
* ``normals``: mean (median, RMSE, % within 11.25°/22.5°/30°) angle over valid pixels;
* ``saliency``: maxF over 15 thresholds 0.2 .. 0.9 with a configurable β² (1 as the survey's
  code, 0.3 as the saliency literature) and the max mean IoU;
* ``edges``: odsF, oisF and AP of the BSDS/SEISM protocol (`mtl_keras.metrics.boundary`), with
  the tolerance ``edge_max_dist`` (0.0075 for PASCAL-Context, 0.011 for NYUD-v2).

With ``quantize=True`` (default) normals, saliency and edge predictions go through 8 bits first,
as the survey saves them as PNG files before scoring ((n + 1) · 255 / 2 and p · 255, rounded).
Metric ids are ``<task>_<key>`` (e.g. ``edges_ods_f``), ready for `mtl_keras.metrics.delta_mtl`
and `mtl_keras.evaluation.compare`.

Example:
    >>> from mtl_keras.data.real import load_examples  # doctest: +SKIP
    >>> scores = evaluate(network, load_examples("nyud", "val"), specs,  # doctest: +SKIP
    ...                   image_size=(480, 640), edge_max_dist=0.011)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtl_keras.tasks import TaskSpec

#: ``{task: (metric key, higher is better)}`` of the protocol's metrics that replace a task's
#: streaming primary metric in tables and Δ_MTL (the survey scores edges by odsF).
PROTOCOL_PRIMARY = {"edges": ("ods_f", True)}


def _quantize_unit(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


def _quantize_normals(n: np.ndarray) -> np.ndarray:
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return 2.0 * np.round((n + 1.0) * 255.0 / 2.0) / 255.0 - 1.0


def _numpy_example(example) -> dict:
    out = {}
    for key, value in dict(example).items():
        value = value.numpy() if hasattr(value, "numpy") else value
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


class SurveyEvaluator:
    """Streams examples through a network and scores them with the survey's protocol.

    Args:
        network: a Keras model mapping an image batch (B, H, W, 3) to ``{task: raw output}``.
        specs: ``{task: TaskSpec}`` of the tasks to score.
        image_size: the network's input ``(height, width)``.
        saliency_beta2: β² of the saliency F-measure.
        saliency_thresholds: thresholds count of saliency maxF (0.2 .. 0.9).
        edge_max_dist: edge matching tolerance, a fraction of the image diagonal.
        edge_thresholds: thresholds count of the edge benchmark (0.01 .. 0.99 for 99).
        quantize: pass normals, saliency and edge predictions through 8 bits, as the survey.
    """

    def __init__(
        self,
        network,
        specs: Mapping[str, TaskSpec],
        *,
        image_size: Sequence[int],
        saliency_beta2: float = 1.0,
        saliency_thresholds: int = 15,
        edge_max_dist: float = 0.0075,
        edge_thresholds: int = 99,
        quantize: bool = True,
    ):
        from mtl_keras.metrics import SaliencyMaxF
        from mtl_keras.metrics.boundary import BoundaryFMeasure

        self.specs = dict(specs)
        self.image_size = tuple(int(v) for v in image_size)
        self.quantize = quantize
        self.settings = {
            "saliency_beta2": float(saliency_beta2),
            "saliency_thresholds": int(saliency_thresholds),
            "edge_max_dist": float(edge_max_dist),
            "edge_thresholds": int(edge_thresholds),
            "quantize": bool(quantize),
            "image_size": list(self.image_size),
        }
        self.metrics = {}
        for task, spec in self.specs.items():
            if task == "edges":
                self.metrics[task] = [BoundaryFMeasure(edge_max_dist, edge_thresholds)]
            elif task == "saliency":
                self.metrics[task] = [
                    SaliencyMaxF(saliency_thresholds, beta2=saliency_beta2, name="saliency_maxf")
                ]
            else:
                self.metrics[task] = spec.metrics()
        self.images = 0
        self.part_images = 0
        self._predict = tf.function(
            lambda x: network(x, training=False),
            input_signature=[tf.TensorSpec((1, *self.image_size, 3), tf.float32)],
        )

    def predict(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Activated predictions ``{task: (H, W, C)}`` at the image's own size."""
        image = np.asarray(image)
        size = image.shape[:2]
        x = tf.image.resize(tf.cast(image[None], tf.float32), self.image_size, "bilinear")
        raw = self._predict(x)
        out = {}
        for task, spec in self.specs.items():
            back = tf.image.resize(tf.cast(raw[task], tf.float32), size, "bilinear")
            pred = np.asarray(spec.activate(back))[0]
            if self.quantize and task == "normals":
                pred = _quantize_normals(pred)
            elif self.quantize and task in ("saliency", "edges"):
                pred = _quantize_unit(pred)
            out[task] = pred
        return out

    def update(self, example: Mapping) -> None:
        """Score one example ``{"image": (H, W, 3), task: label (H, W, C), ...}``."""
        example = _numpy_example(example)
        predictions = self.predict(example["image"])
        self.images += 1
        for task, metrics in self.metrics.items():
            label, pred = np.asarray(example[task]), predictions[task]
            if task == "human_parts":
                if np.all(label == 255):
                    continue
                self.part_images += 1
            for metric in metrics:
                if task == "edges":
                    metric.update(pred[..., 0], label[..., 0])
                else:
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
        """How many images were scored, and how many of them for ``human_parts``."""
        counts = {"images": self.images}
        if "human_parts" in self.specs:
            counts["human_parts_images"] = self.part_images
        return counts


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
        **options: `SurveyEvaluator` options (``saliency_beta2``, ``edge_max_dist``, ...).

    Returns:
        ``{"<task>_<key>": value}``.
    """
    return _run(network, examples, specs, image_size, max_examples, options).result()


def _run(network, examples, specs, image_size, max_examples, options) -> SurveyEvaluator:
    evaluator = SurveyEvaluator(network, specs, image_size=image_size, **options)
    for i, example in enumerate(examples):
        if max_examples is not None and i >= max_examples:
            break
        evaluator.update(example)
    return evaluator


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
    **options,
) -> dict:
    """`evaluate`, then write ``path`` (``protocol.json``) with params, FLOPs and Δ_MTL.

    The file has the format of `mtl_keras.metrics.write_results`, read by
    `mtl_keras.evaluation.compare`. Δ_MTL is added when ``baselines`` (single-task result files
    or a ``{metric_id: value}`` mapping) covers every task's protocol metric.
    """
    from mtl_keras.metrics import (
        count_flops,
        count_params,
        delta_mtl,
        load_baselines,
        write_results,
    )

    evaluator = _run(network, examples, specs, image_size, max_examples, options)
    scores = evaluator.result()
    extra = {
        "params": count_params(network)["params"],
        "flops": count_flops(network, (*image_size, 3)),
        "protocol": evaluator.settings,
        "counts": evaluator.counts(),
    }
    if baselines is not None:
        base = baselines if isinstance(baselines, Mapping) else load_baselines(baselines)
        directions = {}
        for task, spec in specs.items():
            key, higher = PROTOCOL_PRIMARY.get(
                task, (spec.primary_metric, spec.higher_is_better[spec.primary_metric])
            )
            directions[spec.metric_id(key)] = higher
        extra["delta_mtl"] = delta_mtl(scores, base, directions)
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
