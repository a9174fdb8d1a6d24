import math

import numpy as np
import pytest

from mtl_keras.metrics import DepthErrors

# (1, 2, 3, 1): two invalid labels (0); one negative prediction, clamped to 1e-9.
LABELS = np.array([[[1.0, 2.0, 0.0], [4.0, 0.5, 2.0]]], np.float32)[..., None]
PREDS = np.array([[[1.5, 2.0, 3.0], [3.0, -1.0, 2.0]]], np.float32)[..., None]


def test_hand_computed_errors():
    m = DepthErrors()
    m.update_state(LABELS, PREDS)
    r = {k: float(v) for k, v in m.result().items()}
    # Valid pairs (gt, pred): (1, 1.5), (2, 2), (4, 3), (0.5, 1e-9), (2, 2).
    assert r["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 0.25 + 0) / 5), rel=1e-6)
    assert r["abs_rel"] == pytest.approx((0.5 + 0 + 0.25 + 1.0 + 0) / 5, rel=1e-6)
    log_sq = [math.log(1 / 1.5) ** 2, 0.0, math.log(4 / 3) ** 2, math.log(0.5 / 1e-9) ** 2, 0.0]
    assert r["log_rmse"] == pytest.approx(math.sqrt(sum(log_sq) / 5), rel=1e-6)


def test_rmse_is_pooled_over_pixels_not_averaged_over_images():
    labels = np.ones((2, 1, 4, 1), np.float32)
    labels[1, 0, 1:] = 0.0  # image 2 has a single valid pixel
    preds = np.ones_like(labels)
    preds[1] = 3.0  # error 2 on that one pixel
    m = DepthErrors()
    m.update_state(labels, preds)
    assert float(m.result()["rmse"]) == pytest.approx(math.sqrt(4.0 / 5.0), rel=1e-6)


def test_no_valid_pixel_gives_zero():
    m = DepthErrors()
    m.update_state(np.zeros((1, 2, 2, 1)), np.ones((1, 2, 2, 1)))
    assert all(float(v) == 0.0 for v in m.result().values())
