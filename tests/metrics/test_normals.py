import math

import numpy as np
import pytest

from mtl_keras.metrics import NormalAngleErrors

S20, C20 = math.sin(math.radians(20)), math.cos(math.radians(20))
Z, X, Y, ZERO = (0, 0, 1), (1, 0, 0), (0, 1, 0), (0, 0, 0)
# (1, 2, 4, 3): labels (zero vector = invalid, one label not unit length) and raw predictions.
LABELS = np.array([[[Z, X, ZERO, Z], [Y, Z, ZERO, (0, 0, 3)]]], np.float32)
PREDS = np.array(
    [[[(0, 0, 2), (1, 1, 0), (1, 0, 0), (S20, 0, C20)], [(0, -1, 0), ZERO, ZERO, (5, 0, 5)]]],
    np.float32,
)
ANGLES = [0.0, 45.0, 20.0, 180.0, 90.0, 45.0]  # valid pixels; a zero prediction is 90 degrees


def test_hand_computed_angle_statistics():
    m = NormalAngleErrors()
    m.update_state(LABELS, PREDS)
    r = {k: float(v) for k, v in m.result().items()}
    assert r["mean"] == pytest.approx(sum(ANGLES) / 6, rel=1e-6)
    assert r["rmse"] == pytest.approx(math.sqrt(sum(a * a for a in ANGLES) / 6), rel=1e-6)
    assert r["median"] == pytest.approx(45.0, abs=0.01)  # 0.01 degree bins
    assert r["within_11_25"] == pytest.approx(1 / 6)
    assert r["within_22_5"] == pytest.approx(2 / 6)
    assert r["within_30"] == pytest.approx(2 / 6)


def test_small_angles_are_accurate():
    angle = 0.005  # degrees; float32 arccos would round this to 0 or 0.02
    pred = np.array([math.sin(math.radians(angle)), 0.0, math.cos(math.radians(angle))])
    m = NormalAngleErrors()
    m.update_state(np.array(Z, np.float32).reshape(1, 1, 1, 3), pred.reshape(1, 1, 1, 3))
    assert float(m.result()["mean"]) == pytest.approx(angle, rel=1e-3)


def test_matches_numpy_on_random_normals():
    rng = np.random.default_rng(5)
    labels = rng.normal(size=(2, 16, 16, 3))
    labels /= np.linalg.norm(labels, axis=-1, keepdims=True)
    labels[rng.random((2, 16, 16)) < 0.25] = 0.0
    preds = labels + rng.normal(0, 0.4, labels.shape)
    m = NormalAngleErrors(bins=1800)  # 0.1 degree bins
    m.update_state(labels.astype(np.float32), preds.astype(np.float32))
    valid = np.linalg.norm(labels, axis=-1) > 0
    g = labels[valid]
    p = preds.astype(np.float32).astype(np.float64)[valid]
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    angles = np.degrees(np.arccos(np.clip((g * p).sum(-1), -1, 1)))
    r = {k: float(v) for k, v in m.result().items()}
    assert r["mean"] == pytest.approx(angles.mean(), rel=1e-5)
    assert r["rmse"] == pytest.approx(np.sqrt((angles**2).mean()), rel=1e-5)
    lower_median = np.sort(angles)[(len(angles) - 1) // 2]
    assert abs(r["median"] - lower_median) <= 0.1
    for key, limit in (("within_11_25", 11.25), ("within_22_5", 22.5), ("within_30", 30.0)):
        assert r[key] == pytest.approx((angles < limit).mean(), rel=1e-6)


def test_bins_are_validated_and_serialised():
    assert NormalAngleErrors(bins=360).get_config()["bins"] == 360
    with pytest.raises(ValueError, match="bins >= 1"):
        NormalAngleErrors(bins=0)
