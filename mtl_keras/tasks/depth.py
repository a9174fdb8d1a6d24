"""Monocular depth: L1 on valid pixels (0 = invalid), RMSE pooled over the set."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtl_keras.tasks import losses
from mtl_keras.tasks._common import colorize_scalar
from mtl_keras.tasks.base import LabelGeometry, SavedPrediction, TaskSpec


def depth() -> TaskSpec:
    """Metric depth in metres regressed with a masked L1 loss.

    Label: float32 (H, W, 1), 0 marks invalid pixels. The prediction is clamped at 0 when activated.
    Metrics: RMSE over all valid pixels of the set (primary), abs-rel and log-RMSE.

    Example:
        >>> depth().higher_is_better["rmse"]
        False
    """
    from mtl_keras.metrics import DepthErrors

    def baseline(labels: np.ndarray) -> np.ndarray:
        # the mean minimises the pooled RMSE among constants
        valid = labels[labels > 0]
        return np.array([valid.mean() if valid.size else 0.0], np.float32)

    def activate(raw):
        return tf.nn.relu(tf.cast(raw, tf.float32))

    return TaskSpec(
        name="depth",
        channels=1,
        label_channels=1,
        label_dtype="float32",
        loss=losses.masked_l1_depth,
        metrics=lambda: [DepthErrors(name="depth_errors")],
        higher_is_better={"rmse": False, "abs_rel": False, "log_rmse": False},
        primary_metric="rmse",
        activate=activate,
        serve=lambda raw: {"depth": activate(raw)},
        interpolation="bilinear",
        ignore_value=None,
        baseline=baseline,
        colorize=colorize_scalar,
        # zooming in by s brings the scene s times closer; 0 marks invalid pixels
        geometry=LabelGeometry(masked=True, scale_power=-1.0),
        feature="float32",
        # saved as float .mat files, resized bilinearly
        saved=SavedPrediction(interpolation="bilinear", quantize=False),
        valid_mask=losses.valid_depth_pixels,
    )
