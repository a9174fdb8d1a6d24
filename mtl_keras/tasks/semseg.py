"""Semantic segmentation: per-pixel classes, softmax cross-entropy with ignore 255, mIoU."""

from __future__ import annotations

from mtl_keras.tasks._common import classification_task
from mtl_keras.tasks.base import TaskSpec


def semseg(num_classes: int = 40, class_names: tuple[str, ...] | None = None) -> TaskSpec:
    """Semantic segmentation (40 classes on NYUD-v2, 21 on PASCAL-Context).

    Loss: softmax cross-entropy over pixels whose label is not 255. Metric: mIoU with the confusion
    matrix accumulated over the whole set (Vandenhende et al., TPAMI 2022).

    Example:
        >>> spec = semseg(num_classes=5)
        >>> spec.channels, spec.primary_metric
        (5, 'miou')
    """
    return classification_task("semseg", num_classes, class_names)
