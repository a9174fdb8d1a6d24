import numpy as np
import pytest

from mtl_keras.metrics import MeanIoU, pixel_weights


def _one_hot_scores(classes, num_classes):
    """Scores whose argmax is ``classes`` (B, H, W) -> (B, H, W, C)."""
    return np.eye(num_classes, dtype=np.float32)[classes] * 2.0 - 0.5


# labels (1, 2, 3) with one ignored pixel; predicted classes at the same places.
LABELS = np.array([[[0, 1, 2], [2, 255, 1]]], np.uint8)[..., None]
PREDICTED = np.array([[[0, 2, 2], [2, 0, 1]]])


def test_hand_computed_iou_and_pixel_accuracy():
    m = MeanIoU(num_classes=3)
    m.update_state(LABELS, _one_hot_scores(PREDICTED, 3))
    # Valid (label -> pred): 0->0, 1->2, 2->2, 2->2, 1->1; the ignored pixel is skipped.
    # IoU_0 = 1/1, IoU_1 = 1/(1+0+1), IoU_2 = 2/(2+1+0).
    result = m.result()
    assert float(result["miou"]) == pytest.approx((1.0 + 0.5 + 2.0 / 3.0) / 3.0)
    assert float(result["pixel_acc"]) == pytest.approx(4.0 / 5.0)


def test_classes_absent_from_labels_and_predictions_are_left_out_of_the_mean():
    m = MeanIoU(num_classes=5)
    m.update_state(LABELS, _one_hot_scores(PREDICTED, 5))
    assert float(m.result()["miou"]) == pytest.approx((1.0 + 0.5 + 2.0 / 3.0) / 3.0)


def test_a_class_only_predicted_counts_with_iou_zero():
    m = MeanIoU(num_classes=3)
    labels = np.zeros((1, 1, 2, 1), np.uint8)
    m.update_state(labels, _one_hot_scores(np.array([[[0, 1]]]), 3))
    # IoU_0 = 1/2, IoU_1 = 0/1, class 2 absent.
    assert float(m.result()["miou"]) == pytest.approx(0.25)
    assert float(m.result()["pixel_acc"]) == pytest.approx(0.5)


def test_labels_out_of_range_and_custom_ignore_index_are_skipped():
    labels = np.array([[[0, 7, 9]]], np.int32)[..., None]
    m = MeanIoU(num_classes=2, ignore_index=9)
    m.update_state(labels, _one_hot_scores(np.array([[[0, 1, 1]]]), 2))
    assert float(m.result()["miou"]) == pytest.approx(1.0)
    assert float(m.result()["pixel_acc"]) == pytest.approx(1.0)


def test_all_ignored_gives_zero():
    m = MeanIoU(num_classes=3)
    m.update_state(np.full((1, 2, 2, 1), 255, np.uint8), np.zeros((1, 2, 2, 3), np.float32))
    assert {k: float(v) for k, v in m.result().items()} == {"miou": 0.0, "pixel_acc": 0.0}


def test_matches_a_numpy_confusion_matrix_on_random_data():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, (2, 16, 16, 1)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.15] = 255
    scores = rng.normal(size=(2, 16, 16, 6)).astype(np.float32)
    m = MeanIoU(num_classes=6)
    m.update_state(labels, scores)
    gt, pred = labels.ravel(), scores.argmax(-1).ravel()
    keep = gt != 255
    cm = np.zeros((6, 6))
    np.add.at(cm, (gt[keep], pred[keep]), 1)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    assert float(m.result()["miou"]) == pytest.approx(iou.mean(), rel=1e-6)
    assert float(m.result()["pixel_acc"]) == pytest.approx(tp.sum() / keep.sum(), rel=1e-6)


def test_pixel_weights_broadcast_per_image_and_per_pixel():
    like = np.zeros((2, 2, 3, 1))
    assert pixel_weights(None, like).shape == (2, 2, 3, 1)
    per_image = pixel_weights(np.array([1.0, 0.0]), like).numpy()
    assert per_image[0].min() == 1.0 and per_image[1].max() == 0.0
    per_pixel = pixel_weights(np.arange(12.0).reshape(2, 2, 3), like).numpy()
    assert per_pixel[1, 1, 2, 0] == 11.0


def test_errors_say_what_was_expected():
    with pytest.raises(ValueError, match="positive integer"):
        MeanIoU(num_classes=0)
    with pytest.raises(ValueError, match="expects scores with 3 channels"):
        MeanIoU(num_classes=3).update_state(LABELS, PREDICTED[..., None].astype(np.float32))
