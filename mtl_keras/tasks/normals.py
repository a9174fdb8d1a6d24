"""Surface normals: L1 between the normalised prediction and the unit label, angle errors."""

from __future__ import annotations

import numpy as np

from mtl_keras.tasks import losses
from mtl_keras.tasks._common import colorize_normals
from mtl_keras.tasks.base import TaskSpec


def normals() -> TaskSpec:
    """Unit surface normals in the camera frame.

    Label: float32 (H, W, 3) unit vectors, the zero vector marks invalid pixels. Loss: L1 between
    the L2-normalised prediction and the label over valid elements. Metrics: mean angle error
    (primary), median, RMSE and the fractions within 11.25, 22.5 and 30 degrees.

    Example:
        >>> normals().channels
        3
    """
    from mtl_keras.metrics import NormalAngleErrors

    def baseline(labels: np.ndarray) -> np.ndarray:
        flat = labels.reshape(-1, 3)
        valid = flat[np.any(flat != 0, axis=-1)]
        mean = valid.mean(axis=0) if len(valid) else np.array([0.0, 0.0, -1.0])
        return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)

    return TaskSpec(
        name="normals",
        channels=3,
        label_channels=3,
        label_dtype="float32",
        loss=losses.normals_l1,
        metrics=lambda: [NormalAngleErrors(name="normals_errors")],
        higher_is_better={
            "mean": False,
            "median": False,
            "rmse": False,
            "within_11_25": True,
            "within_22_5": True,
            "within_30": True,
        },
        primary_metric="mean",
        activate=losses.l2_normalize,
        serve=lambda raw: {"normals": losses.l2_normalize(raw)},
        interpolation="bilinear",
        ignore_value=None,
        baseline=baseline,
        colorize=colorize_normals,
    )
