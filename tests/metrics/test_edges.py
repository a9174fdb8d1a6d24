import numpy as np
import pytest

from mtl_keras.metrics import EdgeF

# (1, 3, 3, 1) label with a vertical edge; its bottom pixel is ignored (255).
LABELS = np.array([[0, 1, 0], [0, 1, 0], [0, 255, 0]], np.float32)[None, ..., None]
PREDS = np.array([[0.9, 0.2, 0.1], [0.1, 0.6, 0.1], [0.1, 0.9, 0.1]], np.float32)[None, ..., None]


def _run(**kwargs):
    m = EdgeF(**kwargs)
    m.update_state(LABELS, PREDS)
    return {k: float(v) for k, v in m.result().items()}


def test_exact_pixel_agreement():
    # Predicted edges (0,0), (1,1) [(2,1) is ignored]; label edges (0,1), (1,1).
    r = _run(threshold=0.5, tolerance=0)
    assert r == pytest.approx({"f": 0.5, "precision": 0.5, "recall": 0.5})


def test_one_pixel_tolerance_matches_diagonal_neighbours():
    # (0,0) is a Chebyshev neighbour of the label edge (0,1); (0,1) of the prediction (1,1).
    assert _run(threshold=0.5, tolerance=1) == pytest.approx(
        {"f": 1.0, "precision": 1.0, "recall": 1.0}
    )


def test_tolerance_radius_is_not_exceeded():
    labels = np.zeros((1, 1, 5, 1), np.float32)
    labels[0, 0, 0] = 1.0
    preds = np.zeros_like(labels)
    preds[0, 0, 2] = 1.0  # 2 pixels away
    for tolerance, expected in ((1, 0.0), (2, 1.0)):
        m = EdgeF(tolerance=tolerance)
        m.update_state(labels, preds)
        assert float(m.result()["f"]) == pytest.approx(expected)


def test_threshold_is_inclusive_and_configurable():
    assert _run(threshold=0.6, tolerance=0)["precision"] == pytest.approx(0.5)
    assert _run(threshold=0.95, tolerance=0) == {"f": 0.0, "precision": 0.0, "recall": 0.0}


def test_rank_3_labels_are_accepted():
    m = EdgeF(tolerance=1)
    m.update_state(LABELS[..., 0], PREDS)
    assert float(m.result()["f"]) == pytest.approx(1.0)


def test_tolerance_is_validated():
    with pytest.raises(ValueError, match="non-negative integer"):
        EdgeF(tolerance=1.5)
