"""Boundary precision-recall of edge maps: odsF, oisF and AP, the BSDS/SEISM protocol in Python.

The benchmark of Martin et al. ("Learning to Detect Natural Image Boundaries Using Local
Brightness, Color, and Texture Cues", TPAMI 2004), in the form of Dollár's ``edgesEvalImg`` /
``edgesEvalDir`` and Pont-Tuset's SEISM, which the survey (Vandenhende et al., "Multi-Task Learning
for Dense Prediction Tasks: A Survey", TPAMI 2022) runs on PASCAL-Context:

1. For each threshold ``t`` (99 thresholds 0.01 .. 0.99 by default), the prediction is binarised
   as ``pred >= t`` and thinned to one-pixel-wide curves (`thin`: Guo & Hall's algorithm, as
   MATLAB's ``bwmorph(E, 'thin', inf)`` and scikit-image's ``thin``).
2. Predicted and true edge pixels are matched one-to-one, a pair being allowed when the two pixels
   are at most ``max_dist × image diagonal`` apart (0.0075 by default, the BSDS value used for
   PASCAL-Context; 0.011 is used for NYUD-v2 by ATRC, InvPT and TaskPrompter).
3. Per image and threshold: ``cntR`` = matched true pixels, ``sumR`` = true pixels, ``cntP`` =
   matched predicted pixels, ``sumP`` = predicted pixels (with one label map, cntR = cntP).
4. **ODS**: the counts are summed over the dataset per threshold, ``R = cntR / sumR``,
   ``P = cntP / sumP``, ``F = 2PR / (P + R)``; odsF is the best F over the thresholds, where, as in
   ``edgesEvalDir``, P and R are also linearly interpolated at 100 points between neighbouring
   thresholds (``interpolate=True``). **OIS**: each image keeps its best threshold (no
   interpolation); the counts at those thresholds are summed and turned into one F. **AP**: the
   dataset's precision sampled at recall 0, 0.01, .., 1 by linear interpolation between the
   thresholds' (R, P) points (the highest P where several thresholds share an R), summed over
   the recalls inside the reached range and divided by 100, as in ``edgesEvalDir``. Ratios with a
   zero denominator are 0, so a threshold that predicts nothing is the point (0, 0); with fewer
   than two distinct recalls (a prediction equal to its binary label) AP is 0.

**How close this is to SEISM.** Everything but the matching follows the reference. BSDS's
``correspondPixels`` solves a *minimum-cost* assignment (Goldberg's CSA) on a sparse graph: pairs
within the tolerance cost their distance, and each pixel can instead be left unmatched at an
outlier cost of 100 × the tolerance (through 6 random outlier links per pixel). Here the matching
is scipy's *maximum-cardinality* bipartite matching (Hopcroft-Karp) on the graph of all pairs
within the tolerance (a KD-tree radius query). Because leaving two pixels unmatched costs 200 times
the tolerance while any allowed pair costs at most one tolerance, a minimum-cost assignment matches
as many pairs as possible, so both give the same counts, except where BSDS's random outlier graph
or integer cost rounding changes a solution in rare degenerate configurations. The thinning
implementations (here identical to scikit-image's; MATLAB's ``bwmorph`` implements the same
algorithm) could differ on a few pixels, and SEISM's
evaluation reads predictions from 8-bit PNGs (quantise with ``round(255 p) / 255`` to mimic it).
Expect agreement with SEISM to within a few tenths of a point of F, not bit-identical numbers; the
optional ``pyEdgeEval`` package (a wrapper of the BSDS C++ code) can serve as a cross-check.

Example:
    >>> import numpy as np
    >>> label = np.zeros((32, 32)); label[16, 4:28] = 1
    >>> scores = boundary_f_measure([label * 0.9], [label])
    >>> round(scores["ods_f"], 3), round(scores["ois_f"], 3)
    (1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

IGNORE_VALUE = 255
EPS = np.finfo(np.float64).eps


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of Guo & Hall's two-subiteration thinning (CACM 1989, algorithm A1).

    The 8-neighbourhood is coded with bit k - 1 for x_k, counter-clockwise from the east: x1 = E,
    x2 = NE, x3 = N, x4 = NW, x5 = W, x6 = SW, x7 = S, x8 = SE. A pixel is deleted in the first
    (second) subiteration when G1, G2 and G3 (G3') hold:
    G1: exactly one 4-connected background run, X_H = Σ_i [¬x_{2i-1} ∧ (x_{2i} ∨ x_{2i+1})] = 1;
    G2: 2 <= min(n1, n2) <= 3 with n1 = Σ_k (x_{2k-1} ∨ x_{2k}) and n2 = Σ_k (x_{2k} ∨ x_{2k+1});
    G3: (x2 ∨ x3 ∨ ¬x8) ∧ x1 = 0;  G3': (x6 ∨ x7 ∨ ¬x4) ∧ x5 = 0.
    """
    first = np.zeros(256, bool)
    second = np.zeros(256, bool)
    for code in range(256):
        x = [None] + [(code >> k) & 1 for k in range(8)] + [code & 1]  # x[1..8], x[9] = x[1]
        crossings = sum(1 for i in range(1, 5) if not x[2 * i - 1] and (x[2 * i] or x[2 * i + 1]))
        n1 = sum(x[2 * k - 1] or x[2 * k] for k in range(1, 5))
        n2 = sum(x[2 * k] or x[2 * k + 1] for k in range(1, 5))
        g12 = crossings == 1 and 2 <= min(n1, n2) <= 3
        first[code] = g12 and not ((x[2] or x[3] or not x[8]) and x[1])
        second[code] = g12 and not ((x[6] or x[7] or not x[4]) and x[5])
    return first, second


_DELETE_FIRST, _DELETE_SECOND = _thinning_tables()
# (row offset, column offset) of x1 .. x8 in the padded image.
_NEIGHBOURS = ((1, 2), (0, 2), (0, 1), (0, 0), (1, 0), (2, 0), (2, 1), (2, 2))


def thin(mask: np.ndarray) -> np.ndarray:
    """Thin a binary (H, W) mask to one-pixel-wide, 8-connected curves (Guo & Hall, A1).

    The algorithm of scikit-image's ``skimage.morphology.thin`` and MATLAB's
    ``bwmorph(mask, 'thin', inf)``, with the same result as scikit-image's (checked by the tests),
    computed with array slicing over the mask's bounding box instead of a correlation over the
    image, which is faster; the subiterations alternate until nothing changes.
    """
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # outside is background
    image = np.pad(mask[box], 1).astype(np.uint8)
    h, w = image.shape[0] - 2, image.shape[1] - 2
    centre = image[1:-1, 1:-1]
    changed = True
    while changed:
        changed = False
        for table in (_DELETE_FIRST, _DELETE_SECOND):
            code = np.zeros((h, w), np.uint8)
            for bit, (dy, dx) in enumerate(_NEIGHBOURS):
                code |= image[dy : dy + h, dx : dx + w] << bit
            delete = table[code] & (centre == 1)
            if delete.any():
                centre[delete] = 0
                changed = True
    out[box] = centre.astype(bool)
    return out


def default_thresholds(count: int = 99) -> np.ndarray:
    """``count`` thresholds evenly spaced in (0, 1): 0.01, 0.02, .., 0.99 for 99."""
    return np.linspace(1.0 / (count + 1), count / (count + 1), count)


def _matched(pairs: csr_matrix, rows: np.ndarray) -> int:
    """Size of a maximum one-to-one matching between ``rows`` and all columns of ``pairs``."""
    if rows.size == 0 or pairs.shape[1] == 0:
        return 0
    sub = pairs[rows]
    if sub.nnz == 0:
        return 0
    match = maximum_bipartite_matching(sub, perm_type="column")
    return int(np.count_nonzero(match >= 0))


def image_counts(
    prediction: np.ndarray,
    label: np.ndarray,
    thresholds: np.ndarray,
    max_dist: float = 0.0075,
    apply_thinning: bool = True,
) -> np.ndarray:
    """``(cntR, sumR, cntP, sumP)`` of one image at each threshold, shape (T, 4), int64.

    Args:
        prediction: (H, W) edge probabilities in [0, 1].
        label: (H, W) binary edges (> 0.5 is an edge); pixels equal to 255 are ignored: they are
            neither true edges nor counted as predictions.
        thresholds: increasing thresholds.
        max_dist: matching tolerance as a fraction of the image diagonal.
        apply_thinning: thin the binarised prediction (the protocol; off for already-thin maps).
    """
    prediction = np.asarray(prediction, np.float64)
    label = np.asarray(label)
    if prediction.ndim == 3 and prediction.shape[-1] == 1:
        prediction = prediction[..., 0]
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if prediction.ndim != 2 or prediction.shape != label.shape:
        raise ValueError(
            f"boundary counts expect a prediction and a label of the same (H, W) shape, got "
            f"{prediction.shape} and {label.shape}"
        )
    ignore = label == IGNORE_VALUE
    truth = (label > 0.5) & ~ignore
    prediction = np.where(ignore, 0.0, prediction)
    radius = max_dist * float(np.hypot(*label.shape))

    truth_points = np.argwhere(truth)
    candidates = np.argwhere(prediction >= thresholds.min())
    index = np.full(label.shape, -1, np.int64)
    index[tuple(candidates.T)] = np.arange(len(candidates))
    if len(candidates) and len(truth_points):
        near = cKDTree(candidates).sparse_distance_matrix(
            cKDTree(truth_points), radius, output_type="ndarray"
        )
        pairs = csr_matrix(
            (np.ones(len(near), np.int8), (near["i"], near["j"])),
            shape=(len(candidates), len(truth_points)),
        )
    else:
        pairs = csr_matrix((len(candidates), len(truth_points)), dtype=np.int8)

    counts = np.zeros((len(thresholds), 4), np.int64)
    counts[:, 1] = len(truth_points)
    for k, t in enumerate(thresholds):
        edges = prediction >= t
        if apply_thinning and edges.any():
            edges = thin(edges)
        rows = index[edges]
        matched = _matched(pairs, rows)
        counts[k, 0], counts[k, 2], counts[k, 3] = matched, matched, rows.size
    return counts


def _rpf(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = counts.astype(np.float64)
    recall = counts[..., 0] / np.maximum(counts[..., 1], EPS)
    precision = counts[..., 2] / np.maximum(counts[..., 3], EPS)
    f = 2 * precision * recall / np.maximum(precision + recall, EPS)
    return recall, precision, f


def _best_f(recall: np.ndarray, precision: np.ndarray, interpolate: bool) -> float:
    f = 2 * precision * recall / np.maximum(precision + recall, EPS)
    best = float(f.max()) if f.size else 0.0
    if interpolate and len(recall) > 1:
        a = np.linspace(0.0, 1.0, 100)[:, None]
        r = recall[1:] * a + recall[:-1] * (1 - a)
        p = precision[1:] * a + precision[:-1] * (1 - a)
        best = max(best, float((2 * p * r / np.maximum(p + r, EPS)).max()))
    return best


def _average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    best = {}
    for r, p in zip(recall.tolist(), precision.tolist(), strict=True):
        best[r] = max(p, best.get(r, 0.0))
    if len(best) < 2:
        return 0.0
    r = np.array(sorted(best))
    p = np.array([best[v] for v in r])
    grid = np.linspace(0.0, 1.0, 101)
    inside = (grid >= r[0] - 1e-12) & (grid <= r[-1] + 1e-12)
    return float(np.interp(grid[inside], r, p).sum() / 100.0)


class BoundaryFMeasure:
    """Streaming odsF / oisF / AP: `update` per image, `result` at the end (see the module doc).

    Only the per-image counts (T x 4 integers) are kept, so a whole test set fits in memory.

    Args:
        max_dist: matching tolerance as a fraction of the image diagonal.
        thresholds: number of thresholds evenly spaced in (0, 1), or explicit thresholds.
        apply_thinning: thin binarised predictions (the protocol).
        interpolate: interpolate P and R between thresholds for odsF (``edgesEvalDir``).

    Example:
        >>> import numpy as np
        >>> metric = BoundaryFMeasure(max_dist=0.02)  # 0.02 x 90.5 px diagonal = 1.8 px
        >>> label = np.zeros((64, 64)); label[:, 30] = 1
        >>> metric.update(np.roll(label, 1, axis=1) * 0.8, label)  # one pixel off
        >>> round(metric.result()["ods_f"], 3)
        1.0
    """

    def __init__(
        self,
        max_dist: float = 0.0075,
        thresholds: int | Sequence[float] = 99,
        apply_thinning: bool = True,
        interpolate: bool = True,
    ):
        if max_dist < 0:
            raise ValueError(f"max_dist must be >= 0 (a fraction of the diagonal), got {max_dist}")
        if isinstance(thresholds, (int, np.integer)):
            if thresholds < 1:
                raise ValueError(f"thresholds must be >= 1, got {thresholds}")
            values = default_thresholds(int(thresholds))
        else:
            values = np.sort(np.asarray(thresholds, np.float64).reshape(-1))
            if values.size == 0:
                raise ValueError("at least one threshold is needed, got none")
        self.max_dist = float(max_dist)
        self.thresholds = values
        self.apply_thinning = apply_thinning
        self.interpolate = interpolate
        self.counts: list[np.ndarray] = []

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """Add one image: (H, W) probabilities and (H, W) binary label (255 = ignore)."""
        self.counts.append(
            image_counts(prediction, label, self.thresholds, self.max_dist, self.apply_thinning)
        )

    def curve(self) -> dict[str, np.ndarray]:
        """The dataset's ``thresholds``, ``recall`` and ``precision`` arrays."""
        total = np.sum(self.counts, axis=0) if self.counts else np.zeros((len(self.thresholds), 4))
        recall, precision, _ = _rpf(total)
        return {"thresholds": self.thresholds, "recall": recall, "precision": precision}

    def result(self) -> dict[str, float]:
        """``{"ods_f", "ois_f", "ap"}`` in [0, 1]; all 0 before any image."""
        if not self.counts:
            return {"ods_f": 0.0, "ois_f": 0.0, "ap": 0.0}
        curve = self.curve()
        ods = _best_f(curve["recall"], curve["precision"], self.interpolate)
        per_image = np.stack(self.counts)  # (N, T, 4)
        best = np.argmax(_rpf(per_image)[2], axis=1)
        chosen = per_image[np.arange(len(per_image)), best].sum(axis=0)
        ois = float(_rpf(chosen)[2])
        ap = _average_precision(curve["recall"], curve["precision"])
        return {"ods_f": ods, "ois_f": ois, "ap": ap}


def boundary_f_measure(
    predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    max_dist: float = 0.0075,
    thresholds: int | Sequence[float] = 99,
    apply_thinning: bool = True,
    interpolate: bool = True,
) -> dict[str, float]:
    """odsF, oisF and AP of edge probability maps against binary labels (see the module doc).

    Args:
        predictions: (H, W) edge probabilities in [0, 1], one per image (sizes may differ).
        labels: (H, W) binary edge maps of the same sizes; 255 marks ignored pixels.
        max_dist: matching tolerance as a fraction of the image diagonal (0.0075 BSDS and
            PASCAL-Context; 0.011 for NYUD-v2 in later works).
        thresholds: 99 (0.01 .. 0.99) or explicit thresholds.
        apply_thinning: thin the binarised predictions.
        interpolate: interpolate between thresholds for odsF, as ``edgesEvalDir``.

    Returns:
        ``{"ods_f": float, "ois_f": float, "ap": float}``.

    Example:
        >>> import numpy as np
        >>> label = np.zeros((32, 32)); label[:, 10] = 1
        >>> far = np.zeros((32, 32)); far[:, 25] = 1
        >>> boundary_f_measure([far], [label])["ods_f"]
        0.0
    """
    if len(predictions) != len(labels):
        raise ValueError(
            f"boundary_f_measure got {len(predictions)} predictions for {len(labels)} labels; "
            "pass one prediction per label"
        )
    metric = BoundaryFMeasure(max_dist, thresholds, apply_thinning, interpolate)
    for prediction, label in zip(predictions, labels, strict=True):
        metric.update(prediction, label)
    return metric.result()
