"""Boundary odsF / oisF / AP on hand-made cases."""

import time

import numpy as np
import pytest
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree
from skimage.morphology import thin as skimage_thin

from mtl_keras.metrics.boundary import (
    BoundaryFMeasure,
    boundary_f_measure,
    default_thresholds,
    hed_thresholds,
    image_counts,
    thin,
    tolerance_pixels,
)


def _line(size=64, col=30):
    label = np.zeros((size, size))
    label[:, col] = 1
    return label


def test_perfect_prediction_scores_one():
    label = _line()
    scores = boundary_f_measure([label, label], [label, label])
    assert scores["ods_f"] == pytest.approx(1.0) and scores["ois_f"] == pytest.approx(1.0)
    assert scores["ap"] == 0.0  # one (R, P) point at every threshold: no curve, AP 0 as BSDS
    # at 0.9, thresholds above it predict nothing: the curve joins (R, P) = (0, 0) to (1, 1)
    scores = boundary_f_measure([label * 0.9], [label])
    assert scores["ods_f"] == pytest.approx(1.0) and scores["ap"] == pytest.approx(0.505)


def test_graded_perfect_prediction_has_ap_near_one():
    label = np.zeros((110, 110))
    label[5:105, 50] = 1
    pred = np.zeros_like(label)
    pred[5:105, 50] = (np.arange(100) + 0.5) / 100  # recall 0.99 .. 0.01 over the thresholds
    scores = boundary_f_measure([pred], [label])
    assert scores["ap"] == pytest.approx(0.99, abs=1e-9)
    assert scores["ods_f"] == pytest.approx(2 * 0.99 / 1.99)


def test_one_pixel_shift_matches_only_within_the_tolerance():
    label, shifted = _line(), _line(col=31) * 0.8
    # 64 x 64: diagonal 90.5 px; 0.0075 -> 0.68 px (no match), 0.02 -> 1.8 px (match)
    assert boundary_f_measure([shifted], [label])["ods_f"] == 0.0
    assert boundary_f_measure([shifted], [label], max_dist=0.02)["ods_f"] == pytest.approx(1.0)
    diagonal = np.roll(shifted, 1, axis=0)  # (1, 1) away: 1.41 px
    assert boundary_f_measure([diagonal], [label], max_dist=0.02)["ois_f"] == pytest.approx(1.0)


def test_far_prediction_scores_zero():
    scores = boundary_f_measure([_line(col=55) * 0.9], [_line(col=5)], max_dist=0.011)
    assert scores == {"ods_f": 0.0, "ois_f": 0.0, "ap": 0.0}


def test_matching_is_one_to_one():
    label = _line()
    pred = np.maximum(_line(col=29), _line(col=31)) * 0.9  # two lines near one true line
    scores = boundary_f_measure([pred], [label], max_dist=0.02)
    assert scores["ods_f"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P = 1/2, R = 1


def test_thinning_reduces_a_thick_prediction():
    label = _line()
    band = np.maximum.reduce([_line(col=c) for c in (29, 30, 31)]) * 0.9
    thinned = boundary_f_measure([band], [label], max_dist=0.02)["ods_f"]
    assert thinned > 0.98  # the centre line, two pixels shorter (R = 62 / 64)
    unthinned = boundary_f_measure([band], [label], max_dist=0.02, apply_thinning=False)
    assert unthinned["ods_f"] == pytest.approx(2 * (1 / 3) / (4 / 3))  # P = 1/3, R = 1


def test_empty_cases():
    empty = np.zeros((32, 32))
    assert boundary_f_measure([], []) == {"ods_f": 0.0, "ois_f": 0.0, "ap": 0.0}
    assert boundary_f_measure([empty], [empty]) == {"ods_f": 0.0, "ois_f": 0.0, "ap": 0.0}
    assert boundary_f_measure([empty], [_line(32, 10)])["ods_f"] == 0.0  # nothing predicted
    assert boundary_f_measure([_line(32, 10)], [empty])["ods_f"] == 0.0  # no true edge
    # an image without edges and predictions adds nothing to the others' counts
    label = _line()
    both = boundary_f_measure([label * 0.9, np.zeros((64, 64))], [label, np.zeros((64, 64))])
    assert both["ods_f"] == pytest.approx(1.0) and both["ois_f"] == pytest.approx(1.0)


def test_ignored_pixels_are_neither_edges_nor_predictions():
    label = _line()
    label[:, 50:] = 255
    pred = np.maximum(_line(), _line(col=55)) * 0.9  # the second line lies in the ignored zone
    assert boundary_f_measure([pred], [label])["ods_f"] == pytest.approx(1.0)


def test_ods_and_ois_by_hand():
    def image(correct, false):
        label, pred = np.zeros((64, 64)), np.zeros((64, 64))
        label[10, 5:59] = 1
        pred[10, 5:59], pred[40, 5:59] = correct, false
        return pred, label

    (pa, la), (pb, lb) = image(0.35, 0.65), image(0.85, 0.55)
    scores = boundary_f_measure([pa, pb], [la, lb], thresholds=9)
    # ODS: best pooled threshold (t <= 0.3: P = 1/2, R = 1; or t in 0.7..0.8: P = 1, R = 1/2)
    assert scores["ods_f"] == pytest.approx(2 / 3)
    # OIS: image a at t <= 0.3 (P = 1/2), image b at t in 0.6..0.8 (P = 1): P = 2/3, R = 1
    assert scores["ois_f"] == pytest.approx(0.8)


def test_streaming_equals_batch_and_curve():
    rng = np.random.default_rng(0)
    labels = [_line(col=c) for c in (10, 20, 40)]
    preds = [np.clip(lab * 0.7 + rng.uniform(0, 0.4, lab.shape), 0, 1) for lab in labels]
    metric = BoundaryFMeasure(thresholds=[0.3, 0.6, 0.9])
    for p, lab in zip(preds, labels, strict=True):
        metric.update(p, lab)
    batch = boundary_f_measure(preds, labels, thresholds=[0.3, 0.6, 0.9])
    assert metric.result() == batch
    curve = metric.curve()
    assert curve["recall"].shape == curve["precision"].shape == (3,)
    np.testing.assert_array_equal(curve["thresholds"], [0.3, 0.6, 0.9])


def test_thin_matches_scikit_image():
    rng = np.random.default_rng(1)
    for _ in range(60):
        mask = rng.uniform(size=rng.integers(1, 24, size=2)) < rng.uniform(0.05, 0.9)
        np.testing.assert_array_equal(thin(mask), skimage_thin(mask))


def test_ninety_nine_thresholds_on_ten_maps_is_fast():
    rng = np.random.default_rng(2)
    labels = [_line(col=int(c)) for c in rng.integers(5, 60, 10)]
    preds = [np.clip(lab * 0.6 + rng.uniform(0, 0.5, lab.shape), 0, 1) for lab in labels]
    start = time.perf_counter()
    scores = boundary_f_measure(preds, labels, max_dist=0.011)
    assert time.perf_counter() - start < 10.0
    assert 0.0 < scores["ods_f"] <= 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same"):
        boundary_f_measure([np.zeros((4, 4))], [np.zeros((4, 5))])
    with pytest.raises(ValueError, match="one prediction per label"):
        boundary_f_measure([np.zeros((4, 4))], [])


def _soft_edge_map(height, width, seed):
    """8-bit soft edges around random lines and a circle, with an ignored (255) corner."""
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), np.uint8)
    for _ in range(5):
        label[
            rng.integers(0, height), rng.integers(0, width // 2) : rng.integers(width // 2, width)
        ] = 1
        label[
            rng.integers(0, height // 2) : rng.integers(height // 2, height), rng.integers(0, width)
        ] = 1
    rows, cols = np.ogrid[:height, :width]
    label[np.abs(np.hypot(rows - height / 2, cols - width / 2) - height / 3) < 0.5] = 1
    distance = ndimage.distance_transform_edt(label == 0)
    soft = np.exp(-distance / 3.0) * rng.uniform(0.3, 1.0, (height, width))
    soft = ndimage.gaussian_filter(soft + 0.3 * rng.random((height, width)), 1.0)
    label[: height // 8, : width // 4] = 255
    return np.floor(soft / soft.max() * 255) / 255, label


def _counts_by_definition(prediction, label, thresholds, max_dist, apply_thinning=True):
    """(cntR, sumR, cntP, sumP) per threshold, each threshold on its own: binarise, thin, pair
    every predicted and true pixel within the tolerance (a KD-tree), and take the size of a
    maximum matching (scipy's Hopcroft-Karp), which the minimum-cost assignment's counts equal."""
    ignore = label == 255
    truth = np.argwhere((label > 0.5) & ~ignore)
    prediction = np.where(ignore, 0.0, prediction)
    radius = tolerance_pixels(label.shape, max_dist)
    counts = []
    for t in thresholds:
        edges = thin(prediction >= t) if apply_thinning else prediction >= t
        points = np.argwhere(edges)
        matched = 0
        if len(points) and len(truth):
            near = cKDTree(points).sparse_distance_matrix(
                cKDTree(truth), radius + 1e-6, output_type="ndarray"
            )
            i, j = near["i"], near["j"]
            keep = ((points[i] - truth[j]) ** 2).sum(axis=1) <= radius * radius
            graph = csr_matrix(
                (np.ones(keep.sum()), (i[keep], j[keep])), shape=(len(points), len(truth))
            )
            matched = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
        counts.append([matched, len(truth), matched, len(points)])
    return np.array(counts, np.int64)


# (seed, setting) -> (sum of cntR, sum of sumP) over the thresholds, from the implementation
# before the per-image optimisations (KD-tree pairs per image, thinning from scratch per
# threshold, flow from the predicted side), which the optimised one must reproduce exactly
_PREVIOUS_TOTALS = {
    (0, "survey"): (30895, 48150),
    (0, "invpt"): (31850, 48184),
    (0, "wide"): (40380, 48184),
    (1, "survey"): (28695, 45522),
    (1, "invpt"): (29463, 45556),
    (1, "wide"): (36044, 45556),
    (2, "survey"): (30554, 47799),
    (2, "invpt"): (31634, 47833),
    (2, "wide"): (41243, 47833),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_equal_the_definition_at_every_threshold(seed):
    # survey: 99 thresholds, 0.0075 (1.2 px here); invpt: SEISM's 101, 0.011 (1.8 px); wide:
    # 0.05 (8 px, the size of the matching graphs of 480x640 maps at 0.011)
    prediction, label = _soft_edge_map(96, 128, seed)
    settings = {
        "survey": (default_thresholds(99), 0.0075),
        "invpt": (hed_thresholds(), 0.011),
        "wide": (hed_thresholds(), 0.05),
    }
    for name, (thresholds, max_dist) in settings.items():
        counts = image_counts(prediction, label, thresholds, max_dist)
        np.testing.assert_array_equal(
            counts, _counts_by_definition(prediction, label, thresholds, max_dist), err_msg=name
        )
        assert (counts[:, 0].sum(), counts[:, 3].sum()) == _PREVIOUS_TOTALS[seed, name], name
    # unthinned maps, and continuous values (no two thresholds with the same map)
    thresholds, max_dist = hed_thresholds()[::4], 0.03
    counts = image_counts(prediction, label, thresholds, max_dist, apply_thinning=False)
    want = _counts_by_definition(prediction, label, thresholds, max_dist, apply_thinning=False)
    np.testing.assert_array_equal(counts, want)
    smooth = ndimage.gaussian_filter(prediction, 2.0)
    np.testing.assert_array_equal(
        image_counts(smooth, label, thresholds, max_dist),
        _counts_by_definition(smooth, label, thresholds, max_dist),
    )
