import numpy as np
import pytest

from mtl_keras.metrics import SaliencyMaxF

# Two images of 1x3; the last pixel of image 2 is ignored (255).
LABELS = np.array([[[1, 1, 0]], [[0, 0, 255]]], np.float32)[..., None]
PREDS = np.array([[[0.9, 0.5, 0.4]], [[0.2, 0.7, 0.9]]], np.float32)[..., None]
# Per image and threshold (0.3, 0.6): image 1 P=(2/3, 1) R=(1, 1/2) IoU=(2/3, 1/2);
# image 2 has no positives: P=R=IoU=0 at both thresholds (one false positive).


def _run(**kwargs):
    m = SaliencyMaxF(thresholds=[0.3, 0.6], **kwargs)
    m.update_state(LABELS, PREDS)
    return {k: float(v) for k, v in m.result().items()}


def test_hand_computed_max_f_and_miou():
    r = _run()
    # Mean P = (1/3, 1/2), mean R = (1/2, 1/4): F = (0.4, 1/3).
    assert r["max_f"] == pytest.approx(0.4, rel=1e-6)
    assert r["miou"] == pytest.approx(1 / 3, rel=1e-6)


def test_beta2_changes_the_best_threshold():
    r = _run(beta2=0.3)
    f = [1.3 * (1 / 3) * 0.5 / (0.3 / 3 + 0.5), 1.3 * 0.5 * 0.25 / (0.3 * 0.5 + 0.25)]
    assert r["max_f"] == pytest.approx(max(f), rel=1e-6) and f[1] > f[0]


def test_threshold_is_inclusive_and_empty_images_have_iou_one():
    m = SaliencyMaxF(thresholds=[0.5])
    labels = np.array([[[1, 0]], [[0, 0]]], np.float32)[..., None]
    preds = np.array([[[0.5, 0.1]], [[0.1, 0.2]]], np.float32)[..., None]
    m.update_state(labels, preds)
    # Image 1: P = R = IoU = 1. Image 2: nothing to find, nothing found: P = R = 0, IoU = 1.
    assert float(m.result()["miou"]) == pytest.approx(1.0)
    assert float(m.result()["max_f"]) == pytest.approx(2 * 0.5 * 0.5 / 1.0, rel=1e-6)


def test_all_ignored_images_are_skipped():
    m = SaliencyMaxF(thresholds=[0.3, 0.6])
    m.update_state(np.full((1, 1, 3, 1), 255.0, np.float32), np.ones((1, 1, 3, 1), np.float32))
    m.update_state(LABELS, PREDS)
    assert float(m.result()["max_f"]) == pytest.approx(0.4, rel=1e-6)


def _survey_reference(labels, preds, thresholds, beta2):
    """The per-image protocol written directly with numpy loops."""
    precision, recall, iou = [], [], []
    for gt, pr in zip(labels[..., 0], preds[..., 0], strict=True):
        valid = gt != 255
        g = (gt > 0.5) & valid
        rows = []
        for t in thresholds:
            b = (pr >= t) & valid
            tp, fp, fn = (b & g).sum(), (b & ~g).sum(), (~b & g).sum()
            union = tp + fp + fn
            rows.append(
                (tp / (tp + fp + 1e-12), tp / (tp + fn + 1e-12), tp / union if union else 1)
            )
        p, r, j = np.array(rows).T
        precision.append(p)
        recall.append(r)
        iou.append(j)
    p, r = np.mean(precision, 0), np.mean(recall, 0)
    f = (1 + beta2) * p * r / np.maximum(beta2 * p + r, 1e-300)
    return f.max(), np.mean(iou, 0).max()


def test_default_thresholds_match_the_reference_protocol():
    rng = np.random.default_rng(11)
    labels = (rng.random((3, 16, 16, 1)) < 0.4).astype(np.float32)
    labels[rng.random(labels.shape) < 0.05] = 255
    preds = np.clip(0.6 * (labels == 1) + rng.normal(0.2, 0.25, labels.shape), 0, 1)
    preds = preds.astype(np.float32)
    m = SaliencyMaxF(beta2=0.3)
    assert m.get_config()["thresholds"] == 15
    m.update_state(labels, preds)
    thresholds = np.linspace(0.2, 0.9, 15).astype(np.float32)
    max_f, miou = _survey_reference(labels, preds, thresholds, 0.3)
    assert float(m.result()["max_f"]) == pytest.approx(max_f, rel=1e-6)
    assert float(m.result()["miou"]) == pytest.approx(miou, rel=1e-6)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="thresholds >= 1"):
        SaliencyMaxF(thresholds=0)
    with pytest.raises(ValueError, match="beta2 > 0"):
        SaliencyMaxF(beta2=0.0)
