"""Each difference from the survey's evaluation code, on hand-made arrays.

Every expected value is written down from the reference function named in the test.
"""

import json

import numpy as np
import pytest
from scipy import ndimage

from mtl_keras.evaluation import protocol
from mtl_keras.metrics import MeanIoU, SaliencyMaxF
from mtl_keras.metrics.boundary import (
    BoundaryFMeasure,
    correspond_pixels,
    default_thresholds,
    image_counts,
    thin,
)
from mtl_keras.tasks import get
from mtl_keras.tasks.normals import spherical_median
from tests.evaluation.test_protocol import _examples, _specs, constant_network

# --- 1. the protocol names its saliency metric ----------------------------------------------------


def test_survey_selects_saliency_miou_and_invpt_maxf_and_both_are_recorded(tmp_path):
    # survey: evaluation/evaluate_utils.py::calculate_multi_task_performance and validate_results
    # use saliency mIoU; InvPT / TaskPrompter / MLoRE report maxF and odsF at 0.011 on NYUD-v2.
    spec = get("saliency")
    assert spec.evaluation_primary(protocol.get_protocol("survey")) == ("miou", True)
    assert spec.evaluation_primary(protocol.get_protocol("invpt")) == ("max_f", True)
    assert protocol.get_protocol("invpt", "nyud").edge_max_dist == 0.011
    assert protocol.get_protocol("invpt", "pascal").edge_max_dist == 0.0075
    assert len(protocol.get_protocol("invpt").edge_thresholds) == 101  # SEISM HED.txt
    for name in ("survey", "invpt"):
        path = tmp_path / name / "protocol.json"
        base = {"saliency_miou": 0.5, "saliency_max_f": 0.5}
        specs = {"saliency": _specs()["saliency"]}
        out = protocol.evaluate_to_file(
            constant_network(), _examples(), specs, path, name=name, image_size=(4, 4),
            protocol=name, baselines=base,
        )  # fmt: skip
        content = json.loads(path.read_text())
        assert content["protocol"]["name"] == name
        key = {"survey": "saliency_miou", "invpt": "saliency_max_f"}[name]
        want = 100 * (out["metrics"][key] - 0.5) / 0.5  # Δ_MTL (%) of one higher-is-better task
        assert content["delta_mtl"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="survey, invpt"):
        protocol.get_protocol("bsds")


# --- 2. order of operations -----------------------------------------------------------------------


def test_predictions_are_activated_then_resized_then_truncated():
    # save_model_predictions: get_output (softmax argmax / 255 * sigmoid / (n + 1) * 255 / 2) at
    # the network's output, cv2.resize (INTER_NEAREST for class maps, INTER_LINEAR otherwise) to
    # the image size, then imwrite(result.astype(np.uint8)).
    sal = get("saliency")
    probs = np.array([[[0.2], [0.9]]], np.float32)  # (1, 2, 1)
    stored = protocol.store_prediction(sal, probs, (1, 4))
    # 255 p = (51, 229.5); bilinear with half-pixel centres to 4 px: 51, 51 + 178.5 / 4,
    # 51 + 3 * 178.5 / 4, 229.5; truncation: 51, 95, 184, 229
    assert np.allclose(stored[0, :, 0] * 255, [51, 95, 184, 229])
    sem = get("semseg", num_classes=3)
    scores = np.eye(3, dtype=np.float32)[[[2, 0, 1]]]  # (1, 3, 3): classes 2, 0, 1
    stored = protocol.store_prediction(sem, scores, (2, 7))
    # cv2 INTER_NEAREST: source column floor(i * 3 / 7) = 0, 0, 0, 1, 1, 2, 2
    assert np.argmax(stored, axis=-1).tolist() == [[2, 2, 2, 0, 0, 1, 1]] * 2
    normals = get("normals")
    unit = np.array([[[0.0, 0.0, 1.0]]], np.float32)
    stored = protocol.store_prediction(normals, unit, (1, 1))
    # (0 + 1) * 255 / 2 = 127.5 -> 127 -> 2 * 127 / 255 - 1
    assert np.allclose(stored[0, 0], [2 * 127 / 255 - 1, 2 * 127 / 255 - 1, 1.0])


def test_nearest_resize_is_cv2s_not_half_pixel():
    # cv2 INTER_NEAREST picks floor(i * in / out); tf.image.resize would pick floor((i + .5) * r)
    row = np.arange(4)[None, :, None]
    assert protocol.resize_nearest(row, (1, 2))[0, :, 0].tolist() == [0, 2]
    assert protocol.resize_nearest(row, (1, 3))[0, :, 0].tolist() == [0, 1, 2]


# --- 3. mIoU with a class absent everywhere -------------------------------------------------------


def test_absent_class_counts_as_zero_in_the_survey_miou():
    # eval_semseg: jac[c] = tp / max(tp + fp + fn, 1e-8), mean over all classes
    labels = np.array([[[[0], [0], [1], [1]]]], np.uint8)
    scores = np.eye(3, dtype=np.float32)[[[[0, 1, 1, 1]]]]  # predicted 0, 1, 1, 1
    # class 0: tp 1, fp 0, fn 1 -> 1/2; class 1: tp 2, fp 1, fn 0 -> 2/3; class 2: absent
    survey, skip = MeanIoU(3, absent="zero"), MeanIoU(3)
    survey.update_state(labels, scores)
    skip.update_state(labels, scores)
    assert float(survey.result()["miou"]) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert float(skip.result()["miou"]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert (
        get("semseg", num_classes=3).evaluation_metrics(protocol.get_protocol("survey"))[0].absent
        == "zero"
    )


# --- 4. saliency binarised with '>' ---------------------------------------------------------------


def test_saliency_threshold_is_strict_in_the_protocol():
    # eval_sal: mask_pred = pred > thres
    label = np.array([[[[1.0], [0.0]]]])
    pred = np.array([[[[0.5], [0.2]]]])  # exactly at the threshold 0.5
    strict, inclusive = SaliencyMaxF([0.5], strict=True), SaliencyMaxF([0.5])
    strict.update_state(label, pred)
    inclusive.update_state(label, pred)
    assert float(strict.result()["max_f"]) == 0.0  # nothing predicted
    assert float(inclusive.result()["max_f"]) == pytest.approx(1.0)
    metric = get("saliency").evaluation_metrics(protocol.get_protocol("survey"))[0]
    assert metric.strict and metric.thresholds == 15


# --- 5. odsF without interpolation ----------------------------------------------------------------


def test_ods_takes_the_best_threshold_without_interpolation():
    # SEISM general_ods: F at each threshold, max over thresholds. edgesEvalDir also interpolates.
    counts = np.array([[2, 2, 2, 4], [1, 2, 1, 1]])  # (R, P) = (1, 0.5) and (0.5, 1)
    plain = BoundaryFMeasure(0.01, [0.3, 0.6], interpolate=False)
    interpolated = BoundaryFMeasure(0.01, [0.3, 0.6], interpolate=True)
    plain.add_counts(counts)
    interpolated.add_counts(counts)
    assert plain.result()["ods_f"] == pytest.approx(2 / 3)
    # edgesEvalDir samples 100 points of each segment: close to the midpoint (0.75, 0.75)
    assert interpolated.result()["ods_f"] == pytest.approx(0.75, abs=1e-4)
    metric = get("edges").evaluation_metrics(protocol.get_protocol("survey"))[0]
    assert not metric.interpolate and len(metric.thresholds) == 99


# --- 6. edge matching: BSDS's minimum-cost assignment ---------------------------------------------


def test_min_cost_assignment_prefers_more_pairs_then_shorter_ones():
    # correspondPixels (match.cc): pair cost rint(100 d), outlier cost 100 * maxDist; a greedy
    # nearest-first matching takes a-b (d = 1) and leaves c unmatched; the optimum matches
    # a-b' and c-b (two pairs), as BSDS does.
    pred, label = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    pred[10, 10] = pred[10, 8] = True  # a, c
    label[10, 9] = label[10, 12] = True  # b (between a and c), b' (2 px right of a)
    m1, m2, cost = correspond_pixels(pred, label, max_dist=2.1 / np.hypot(20, 20))
    assert int((m1 > 0).sum()) == int((m2 > 0).sum()) == 2
    assert m1[10, 10] == 1 + 10 * 20 + 12 and m1[10, 8] == 1 + 10 * 20 + 9
    assert cost == pytest.approx(2.0 + 1.0)  # no outliers


def _soft_map(h, w, seed):
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), bool)
    for _ in range(4):
        label[rng.integers(0, h), rng.integers(0, w // 2) : rng.integers(w // 2, w)] = True
        label[rng.integers(0, h // 2) : rng.integers(h // 2, h), rng.integers(0, w)] = True
    soft = np.exp(-ndimage.distance_transform_edt(~label) / 2.0) * rng.uniform(0.3, 1, (h, w))
    soft = ndimage.gaussian_filter(soft + 0.3 * rng.random((h, w)), 1.0)
    return soft / soft.max(), label


def test_counts_equal_the_minimum_cost_assignment():
    # cntR = matched true pixels of correspondPixels' assignment, at every threshold
    prediction, label = _soft_map(30, 40, 0)
    thresholds = np.linspace(0.1, 0.9, 9)
    counts = image_counts(prediction, label, thresholds, max_dist=0.05)
    for k, t in enumerate(thresholds):
        edges = thin(prediction >= t)
        m1, m2, _ = correspond_pixels(edges, label, max_dist=0.05)
        assert counts[k].tolist() == [(m2 > 0).sum(), label.sum(), (m1 > 0).sum(), edges.sum()]


def test_counts_match_pyedgeeval_up_to_its_random_outlier_graph():
    lib = pytest.importorskip(
        "pyEdgeEval._lib",
        reason="pyEdgeEval (BSDS correspondPixels, GPL C++) is an optional test extra; "
        "pip install pyEdgeEval",
    )
    # BSDS links each pixel to 6 random outlier slots (time-seeded), so its count may fall short
    # of the optimum on a few cells and varies between runs; it never exceeds ours, and the best
    # of a few runs reaches it.
    prediction, label = _soft_map(48, 64, 1)
    thresholds = default_thresholds(24)
    counts = image_counts(prediction, label, thresholds, max_dist=0.02)
    for k, t in enumerate(thresholds):
        edges = thin(prediction >= t)
        runs = [int((lib.correspond_pixels(edges, label, 0.02)[1] > 0).sum()) for _ in range(8)]
        assert max(runs) == counts[k, 0], t


def test_thin_matches_scikit_image_on_thick_noisy_masks():
    skimage_thin = pytest.importorskip("skimage.morphology").thin
    rng = np.random.default_rng(3)
    for level in (0.45, 0.5, 0.55):
        mask = ndimage.gaussian_filter(rng.random((60, 80)), 2.0) > level
        assert (thin(mask) == skimage_thin(mask)).all()


# --- trivial baselines ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["saliency", "edges"])
def test_binary_baseline_is_the_best_constant(task):
    spec = get(task)
    labels = np.zeros((2, 8, 8, 1), np.float32)
    labels[:, 2:4, :] = 1.0
    const = spec.baseline(labels)
    best = SaliencyMaxF()
    best.update_state(labels, np.asarray(spec.activate(np.broadcast_to(const, labels.shape))))
    score = float(best.result()["max_f"])
    assert score == pytest.approx(2 * 0.25 / 1.25)  # all positive: P = 1/4, R = 1
    for c in np.linspace(0.0, 1.0, 21):  # no constant does better
        metric = SaliencyMaxF()
        metric.update_state(labels, np.full(labels.shape, c))
        assert float(metric.result()["max_f"]) <= score + 1e-9


def test_normals_baseline_minimises_the_mean_angle():
    normals = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 0]], np.float64)
    median = spherical_median(normals)
    assert np.allclose(median, [0, 0, 1], atol=1e-4)  # the mean direction is 14 degrees off

    def mean_angle(m):
        return np.degrees(np.arccos(np.clip(normals @ m, -1, 1))).mean()

    rng = np.random.default_rng(0)
    for m in rng.normal(size=(200, 3)):
        assert mean_angle(median) <= mean_angle(m / np.linalg.norm(m)) + 1e-6
