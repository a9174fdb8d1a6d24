"""Surface normals: L1 between the normalised prediction and the unit label, angle errors."""

from __future__ import annotations

import numpy as np

from mtl_keras.tasks import losses
from mtl_keras.tasks._common import colorize_normals
from mtl_keras.tasks.base import LabelGeometry, SavedPrediction, TaskSpec


def spherical_median(labels: np.ndarray, iterations: int = 100) -> np.ndarray:
    """The unit vector minimising the mean angle to the valid normals of ``labels``.

    The best constant predictor under the primary metric (mean angle error). Weiszfeld's
    iteration on the sphere (Fletcher et al., "The geometric median on Riemannian manifolds",
    NeuroImage 2009): ``m <- normalise(Σ w_i n_i)`` with ``w_i = 1 / angle(n_i, m)``, started at
    the normalised mean, keeping the best iterate.
    """
    flat = np.asarray(labels, np.float64).reshape(-1, 3)
    valid = flat[np.any(flat != 0, axis=-1)]
    if len(valid) == 0:
        return np.array([0.0, 0.0, -1.0])
    valid = valid / np.linalg.norm(valid, axis=-1, keepdims=True)

    def mean_angle(m):
        return float(np.arccos(np.clip(valid @ m, -1.0, 1.0)).mean())

    m = valid.mean(axis=0)
    m = m / max(np.linalg.norm(m), 1e-12)
    best, best_angle = m, mean_angle(m)
    for _ in range(iterations):
        angle = np.arccos(np.clip(valid @ m, -1.0, 1.0))
        step = (valid / np.maximum(angle, 1e-6)[:, None]).sum(axis=0)
        m = step / max(np.linalg.norm(step), 1e-12)
        value = mean_angle(m)
        if value < best_angle - 1e-12:
            best, best_angle = m, value
        else:
            break
    return best


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
        return spherical_median(labels).astype(np.float32)

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
        # camera-frame vectors: x, y turn with the image; the zero vector marks invalid pixels
        geometry=LabelGeometry(masked=True, vector=True, unit=True),
        feature="float32",
        # saved as an 8-bit PNG (n̂ + 1) · 255 / 2 of the normalised prediction, read as 2x/255 - 1
        saved=SavedPrediction(
            encode=lambda n: (np.asarray(n, np.float32) + 1.0) * 255.0 / 2.0,
            interpolation="bilinear",
            quantize=True,
            decode=lambda x: 2.0 * np.asarray(x, np.float32) / 255.0 - 1.0,
        ),
        valid_mask=losses.valid_vector_pixels,
    )
