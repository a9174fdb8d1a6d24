"""Boundary precision-recall of edge maps: odsF, oisF and AP, the BSDS/SEISM protocol in Python.

The benchmark of Martin et al. ("Learning to Detect Natural Image Boundaries Using Local
Brightness, Color, and Texture Cues", TPAMI 2004), in the form of Dollár's ``edgesEvalImg`` /
``edgesEvalDir`` and Pont-Tuset's SEISM, which the survey (Vandenhende et al., "Multi-Task Learning
for Dense Prediction Tasks: A Survey", TPAMI 2022) runs on PASCAL-Context:

1. For each threshold ``t`` (99 thresholds 0.01 .. 0.99 by default), the prediction is binarised
   as ``pred >= t`` (SEISM's ``read_one_cont_png``) and thinned to one-pixel-wide curves (`thin`:
   Guo & Hall's algorithm, as MATLAB's ``bwmorph(E, 'thin', inf)`` and scikit-image's ``thin``).
2. Predicted and true edge pixels are matched one-to-one by BSDS's ``correspondPixels``: a pair is
   allowed when ``du² + dv² <= (max_dist × image diagonal)²`` (0.0075 by default, the BSDS value
   used for PASCAL-Context; 0.011 is used for NYUD-v2 by ATRC, InvPT and TaskPrompter).
3. Per image and threshold: ``cntR`` = matched true pixels, ``sumR`` = true pixels, ``cntP`` =
   matched predicted pixels, ``sumP`` = predicted pixels (with one label map, cntR = cntP).
4. **ODS**: the counts are summed over the dataset per threshold, ``R = cntR / sumR``,
   ``P = cntP / sumP``, ``F = 2PR / (P + R)``; odsF is the best F over the thresholds. SEISM's
   ``general_ods`` (the survey's protocol) takes the best threshold as it is
   (``interpolate=False``); Dollár's ``edgesEvalDir`` also interpolates P and R linearly at 100
   points between neighbouring thresholds (``interpolate=True``). **OIS**: each image keeps its
   best threshold (no interpolation); the counts at those thresholds are summed and turned into
   one F. **AP**: the dataset's precision sampled at recall 0, 0.01, .., 1 by linear
   interpolation between the thresholds' (R, P) points (the highest P where several thresholds
   share an R), summed over the recalls inside the reached range and divided by 100, as in
   ``edgesEvalDir``. Ratios with a zero denominator are 0, so a threshold that predicts nothing is
   the point (0, 0); with fewer than two distinct recalls AP is 0.

**The matching.** ``correspondPixels`` solves a minimum-cost assignment (Goldberg's CSA) in which a
pair costs ``rint(100 d)`` and a pixel left unmatched costs ``ceil(100 × outlier_cost)``, with
``outlier_cost = 100 × max_dist × diagonal``. `correspond_pixels` solves the same assignment with
scipy's sparse minimum-weight full bipartite matching (LAPJVsp). Because one more matched pair
removes two outliers (saving 200 outlier units) and costs at most one tolerance, every
minimum-cost assignment is a maximum-cardinality matching, so the *counts* equal the size of a
maximum matching of the pair graph; `image_counts` computes that size with a maximum flow
(Dinic's algorithm in scipy), which the tests check against `correspond_pixels`.
BSDS's C++ code differs in one respect: to keep CSA fast it lets each pixel become an outlier
through only 6 *random* outlier links (and a 100-times dearer "perfect match overlay"), drawn
from a generator seeded with the time of day. On a small fraction of (image, threshold) cells
(about 6% on the soft maps of the tests) the random outlier graph forces one or two pairs to stay
unmatched, so BSDS's counts vary between runs of the same input and are never above ours; the
maximum over a few BSDS runs equals our count (checked against ``pyEdgeEval`` in the tests).

**Cost.** Per image, once for all thresholds: the allowed pairs between the true pixels and
every pixel that the lowest threshold predicts are found with a table of the disk's offsets (a
candidate with no true pixel within the tolerance can never match and gets no row); the
thresholds are nested, so each threshold's thinned pixels select rows of that graph, and its
binary map, the map's neighbourhood codes and its border are the previous threshold's less the
pixels between the two thresholds (a slice of the pixels sorted by value). Per threshold: the
thinning, which visits only pixels next to a deletion (`thin`), so its cost is proportional to
the mask's area, not to area × thickness; and one maximum flow from the smaller side of the
pair graph (about half the time of a flow from the predicted side where those outnumber the true
pixels). An unchanged binary map, or unchanged thinned pixels within reach, reuses the previous
threshold's result. About 1.2 CPU-s (survey: 99 thresholds, 0.0075) and 1.4 CPU-s (invpt: 101,
0.011) per 480x640 map, 2x less than before (``benchmarks/edge_eval.py``).

``pyEdgeEval`` 0.2.8 thins with the same tables but stops as soon as the first
subiteration deletes nothing, whereas MATLAB's ``bwmorph`` (and `thin`) stop after a full
iteration without change; the two can differ on a few pixels of thick maps.

Example:
    >>> import numpy as np
    >>> label = np.zeros((32, 32)); label[16, 4:28] = 1
    >>> scores = boundary_f_measure([label * 0.9], [label])
    >>> round(scores["ods_f"], 3), round(scores["ois_f"], 3)
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow, min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

IGNORE_VALUE = 255
EPS = np.finfo(np.float64).eps
#: BSDS ``correspondPixels``: integer costs are ``rint(MULTIPLIER × distance)``.
MULTIPLIER = 100
#: BSDS ``correspondPixels``' default outlier cost, in units of the tolerance.
OUTLIER_COST = 100.0


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


_DELETE_TABLES = _thinning_tables()
# (row offset, column offset) of x1 .. x8 relative to the centre.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
# and the mask that clears, in the code of q's neighbour in direction k, the bit of q
_CLEAR_BIT = [np.uint8(255 ^ (1 << ((bit + 4) % 8))) for bit in range(8)]


def _neighbour_codes(image: np.ndarray) -> np.ndarray:
    """Flat uint8 codes of a padded (h, w) 0/1 image: bit k - 1 set when x_k is foreground."""
    height, width = image.shape
    code = np.zeros((height, width), np.uint8)
    inner = code[1:-1, 1:-1]
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        inner |= image[1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx] << bit
    return code.reshape(-1)


def _offsets(width: int) -> list[int]:
    """Flat offsets of x1 .. x8 in a row-major image ``width`` pixels wide."""
    return [dy * width + dx for dy, dx in _NEIGHBOURS]


def _delete(
    flat: np.ndarray, code: np.ndarray, gone: np.ndarray, offsets: list[int], stamp: np.ndarray
) -> np.ndarray:
    """Clear the (distinct) pixels ``gone`` of a padded flat image and update its codes.

    Returns the foreground pixels next to them, each once (their neighbourhood changed).
    ``stamp`` is scratch space of the image's size, read only where just written.
    """
    flat[gone] = 0
    touched = []
    for bit, offset in enumerate(offsets):
        # q's neighbour in direction `bit` is q + offset; it loses the opposite bit
        neighbour = gone + offset
        code[neighbour] &= _CLEAR_BIT[bit]
        touched.append(neighbour)
    touched = np.concatenate(touched)
    touched = touched[flat[touched].view(bool)]
    order = np.arange(touched.size, dtype=np.int32)
    stamp[touched] = order
    return touched[stamp[touched] == order]  # drop repeats without sorting


def _merge(new: np.ndarray, old: np.ndarray, flat: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """The distinct foreground pixels of ``new`` (distinct) and ``old`` (distinct), unsorted.

    ``fresh`` is zero scratch space of the image's size, left zero.
    """
    fresh[new] = 1
    old = old[(flat[old] & ~fresh[old]).view(bool)]
    fresh[new] = 0
    return np.concatenate([new, old])


def _thin_flat(
    flat: np.ndarray,
    code: np.ndarray,
    border: np.ndarray,
    offsets: list[int],
    stamp: np.ndarray,
    fresh: np.ndarray,
) -> None:
    """`thin` in place on a padded flat 0/1 image, its codes and its border (see `thin`)."""
    candidates = previous = border  # the second table has not examined the border yet
    table = 0
    while candidates.size:
        gone = candidates[_DELETE_TABLES[table][code[candidates]]]
        touched = _delete(flat, code, gone, offsets, stamp)
        # next: the foreground next to this subiteration's or the previous one's deletions
        candidates = _merge(touched, previous, flat, fresh)
        previous = touched
        table = 1 - table


def thin(mask: np.ndarray) -> np.ndarray:
    """Thin a binary (H, W) mask to one-pixel-wide, 8-connected curves (Guo & Hall, A1).

    The algorithm of scikit-image's ``skimage.morphology.thin`` and MATLAB's
    ``bwmorph(mask, 'thin', inf)`` with the same result as scikit-image's (checked by the tests):
    the two subiterations alternate, each deciding all its deletions on the image as it was at
    its start, until a full iteration deletes nothing. A subiteration's decision at a pixel
    depends on its 8-neighbourhood only, and each table last examined every pixel two
    subiterations earlier, so a subiteration examines only the foreground pixels next to a pixel
    deleted by one of the two previous subiterations (at first the border, the foreground pixels
    with a background neighbour): the others would be kept again. The neighbourhood codes are
    updated where pixels are deleted, so the work is proportional to the mask's area instead of
    area x thickness.
    """
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # outside is background
    image = np.pad(mask[box], 1).view(np.uint8)
    flat = image.reshape(-1)
    code = _neighbour_codes(image)  # kept up to date as pixels are deleted
    border = np.flatnonzero(flat & (code != 255))
    stamp, fresh = np.empty(flat.size, np.int32), np.zeros(flat.size, np.uint8)
    _thin_flat(flat, code, border, _offsets(image.shape[1]), stamp, fresh)
    out[box] = image[1:-1, 1:-1].view(bool)
    return out


def default_thresholds(count: int = 99) -> np.ndarray:
    """``count`` thresholds evenly spaced in (0, 1): 0.01, 0.02, .., 0.99 for 99."""
    return np.linspace(1.0 / (count + 1), count / (count + 1), count)


def hed_thresholds() -> np.ndarray:
    """SEISM's ``parameters/HED.txt``: 0.001, 0.01, 0.02, .., 0.99, 0.999 (101 thresholds)."""
    return np.concatenate([[0.001], default_thresholds(99), [0.999]])


def tolerance_pixels(shape: Sequence[int], max_dist: float) -> float:
    """The matching radius in pixels: ``max_dist × sqrt(H² + W²)`` (BSDS ``correspondPixels``)."""
    return float(max_dist) * math.hypot(int(shape[0]), int(shape[1]))


def _pairs(first: np.ndarray, second: np.ndarray, radius: float) -> np.ndarray:
    """``(k, 3)`` int64 rows ``(i, j, d²)`` of every pair with ``d² <= radius²``, as BSDS."""
    if len(first) == 0 or len(second) == 0:
        return np.zeros((0, 3), np.int64)
    near = cKDTree(first).sparse_distance_matrix(
        cKDTree(second), radius + 1e-6, output_type="ndarray"
    )
    i, j = near["i"].astype(np.int64), near["j"].astype(np.int64)
    d2 = ((first[i] - second[j]) ** 2).sum(axis=1)
    keep = d2 <= radius * radius
    return np.stack([i[keep], j[keep], d2[keep]], axis=1)


def _pair_graph(candidates: np.ndarray, truth_points: np.ndarray, radius: float):
    """The allowed pairs between candidate pixels and true pixels, found with a table of offsets.

    A pair is allowed when ``du² + dv² <= radius²`` (as `_pairs`). The offsets ``(du, dv)`` of
    the disk are added to every true pixel at once, so the cost is (true pixels) x (disk area)
    look-ups, with no tree and no sorting.

    Returns:
        ``(index, graph)``: ``index`` an (H, W) int64 map holding, for each candidate with a true
        pixel within the radius, its row in ``graph``, in row-major order, and -1 elsewhere;
        ``graph`` the CSR biadjacency matrix (rows x true pixels, sorted indices) of the pairs.
    """
    height, width = candidates.shape
    reach = int(math.floor(radius))
    span = np.arange(-reach, reach + 1)
    du, dv = np.meshgrid(span, span, indexing="ij")
    inside = du * du + dv * dv <= radius * radius
    padded_width = width + 2 * reach
    offsets = (du[inside] * padded_width + dv[inside]).astype(np.intp)
    grid = np.zeros((height + 2 * reach, padded_width), bool)
    grid[reach : reach + height, reach : reach + width] = candidates
    grid = grid.reshape(-1)
    base = (truth_points[:, 0] + reach) * padded_width + truth_points[:, 1] + reach
    pixels, per_truth = [], []
    for start in range(0, len(base), 4096):  # (true pixels x offsets) in bounded blocks
        near = base[start : start + 4096, None] + offsets
        hit = grid[near]
        pixels.append(near[hit])  # truth-major: each true pixel's candidates in turn
        per_truth.append(np.count_nonzero(hit, axis=1))
    pixels = np.concatenate(pixels) if pixels else np.zeros(0, np.intp)
    per_truth = np.concatenate(per_truth) if per_truth else np.zeros(0, np.intp)
    occupied = np.zeros(grid.size, bool)
    occupied[pixels] = True
    rows = np.flatnonzero(occupied)
    index = np.full(grid.size, -1, np.int64)
    index[rows] = np.arange(len(rows))
    indptr = np.concatenate([[0], np.cumsum(per_truth)])
    by_truth = csr_matrix(
        (np.ones(len(pixels), np.int8), index[pixels], indptr), shape=(len(base), len(rows))
    )
    index = index.reshape(height + 2 * reach, padded_width)[
        reach : reach + height, reach : reach + width
    ]
    return index, by_truth.T.tocsr()


def _maximum_matching_size(graph: csr_matrix) -> int:
    """Size of a maximum matching of the bipartite graph with biadjacency matrix ``graph``.

    A unit-capacity flow network source -> rows -> columns -> sink, assembled directly in CSR
    form (``graph``'s indices must be sorted) and solved with Dinic's algorithm
    (``scipy.sparse.csgraph.maximum_flow``): O(E √V) on unit networks. Pass the smaller side as
    the rows: Dinic's searches start from the rows that are still free, and where one side ends
    up (nearly) saturated, starting from it keeps them small (about 2x faster on edge maps).
    scipy's Hopcroft-Karp (``maximum_bipartite_matching``) gives the same size but took up to
    20 s on some 480x640 edge maps where the flow takes 15 ms (see ``benchmarks/edge_eval.py``).
    """
    n_rows, n_cols = graph.shape
    edges = graph.nnz
    if edges == 0:
        return 0
    n = n_rows + n_cols + 2
    start = n_rows + edges  # where the columns' edges to the sink begin
    indptr = np.concatenate(
        [[0], n_rows + graph.indptr, start + np.arange(1, n_cols + 1), [start + n_cols]]
    ).astype(np.int32)
    indices = np.concatenate(
        [np.arange(1, n_rows + 1), 1 + n_rows + graph.indices, np.full(n_cols, n - 1)]
    ).astype(np.int32)
    network = csr_matrix((np.ones(len(indices), np.int32), indices, indptr), shape=(n, n))
    return int(maximum_flow(network, 0, n - 1, method="dinic").flow_value)


def correspond_pixels(
    prediction: np.ndarray,
    label: np.ndarray,
    max_dist: float = 0.0075,
    outlier_cost: float = OUTLIER_COST,
) -> tuple[np.ndarray, np.ndarray, float]:
    """One-to-one correspondence of two binary edge maps with BSDS's cost structure.

    The assignment of BSDS's ``correspondPixels`` (Martin et al., TPAMI 2004; ``match.cc``): every
    pixel of each map is either matched to a pixel of the other map at most
    ``r = max_dist × diagonal`` away, at the integer cost ``rint(100 d)``, or left as an outlier
    at the cost ``ceil(100 × outlier_cost × r)``; the total is minimised. It is solved exactly
    with ``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` on the graph
    ``[pixels of the prediction, outlier slots of the label] × [pixels of the label, outlier
    slots of the prediction]``: real pairs, each pixel to its own outlier slot, and each slot
    pair ``(label j's slot, prediction i's slot)`` of an allowed pair ``(i, j)`` at no cost (so
    the slots of matched pixels pair up). Each pixel can always be an outlier (BSDS draws 6 random
    outlier links per pixel instead; see the module doc).

    Args:
        prediction: (H, W) binary map.
        label: (H, W) binary map of the same shape.
        max_dist: tolerance as a fraction of the image diagonal.
        outlier_cost: cost of an unmatched pixel in tolerances (BSDS: 100).

    Returns:
        ``(match1, match2, cost)``: int64 (H, W) maps holding, for each matched pixel, ``1 +``
        the flat (row-major) index of its partner in the other map and 0 elsewhere, and the
        assignment's cost in pixels (outliers at ``outlier_cost × r``, pairs at their distance).

    Example:
        >>> import numpy as np
        >>> a = np.zeros((10, 10), bool); a[5, 2:8] = True
        >>> m1, m2, cost = correspond_pixels(np.roll(a, 1, axis=0), a, max_dist=0.1)
        >>> int((m1 > 0).sum()), cost
        (6, 6.0)
    """
    first, second = np.asarray(prediction, bool), np.asarray(label, bool)
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(
            f"correspond_pixels expects two (H, W) maps of one shape, got {first.shape} and "
            f"{second.shape}"
        )
    radius = tolerance_pixels(first.shape, max_dist)
    p, g = np.argwhere(first), np.argwhere(second)
    n1, n2 = len(p), len(g)
    match1 = np.zeros(first.shape, np.int64)
    match2 = np.zeros(first.shape, np.int64)
    outlier = outlier_cost * radius
    pairs = _pairs(p, g, radius)
    if len(pairs) == 0:
        return match1, match2, float(outlier * (n1 + n2))
    i, j, d2 = pairs.T
    w_pair = np.rint(np.sqrt(d2) * MULTIPLIER).astype(np.int64)
    w_out = int(math.ceil(outlier * MULTIPLIER))
    # Left: prediction pixels 0..n1-1, label outlier slots n1..n1+n2-1.
    # Right: label pixels 0..n2-1, prediction outlier slots n2..n2+n1-1.
    # Weights are shifted by +1 (scipy drops explicit zeros); every full matching has n1 + n2
    # edges, so the shift does not change which assignment is optimal.
    left = np.concatenate([i, np.arange(n1), n1 + np.arange(n2), n1 + j])
    right = np.concatenate([j, n2 + np.arange(n1), np.arange(n2), n2 + i])
    weight = np.concatenate(
        [w_pair, np.full(n1, w_out), np.full(n2, w_out), np.zeros(len(i), np.int64)]
    )
    graph = csr_matrix((weight + 1, (left, right)), shape=(n1 + n2, n1 + n2))
    rows, cols = min_weight_full_bipartite_matching(graph)
    real = (rows < n1) & (cols < n2)
    pi, gj = rows[real], cols[real]
    width = first.shape[1]
    match1[tuple(p[pi].T)] = 1 + g[gj, 0] * width + g[gj, 1]
    match2[tuple(g[gj].T)] = 1 + p[pi, 0] * width + p[pi, 1]
    distance = np.sqrt(((p[pi] - g[gj]) ** 2).sum(axis=1)).sum()
    cost = float(distance + outlier * (n1 + n2 - 2 * len(pi)))
    return match1, match2, cost


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
        thresholds: increasing thresholds; a pixel is predicted at ``t`` when ``pred >= t``.
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
    thresholds = np.asarray(thresholds, np.float64)
    ignore = label == IGNORE_VALUE
    truth = (label > 0.5) & ~ignore
    prediction = np.where(ignore, 0.0, prediction)
    radius = tolerance_pixels(label.shape, max_dist)

    truth_points = np.argwhere(truth)
    counts = np.zeros((len(thresholds), 4), np.int64)
    counts[:, 1] = len(truth_points)
    if len(thresholds) == 0:
        return counts
    # The pairs of every pixel that any threshold predicts, once; a candidate farther than the
    # tolerance from every true pixel can never match and gets no row (index -1).
    index, pairs = _pair_graph(prediction >= thresholds.min(), truth_points, radius)

    # The thresholds are nested: the binary map of each threshold is the previous one less the
    # pixels between the two, which the pixels sorted by value give as a slice. The map, its
    # neighbourhood codes and its border (the thinning's inputs) are updated for those pixels
    # only; each thinning starts from copies.
    height, width = label.shape
    offsets = _offsets(width + 2)
    position = ((np.arange(height)[:, None] + 1) * (width + 2) + np.arange(1, width + 1)).ravel()
    padded_index = np.full((height + 2) * (width + 2), -1, np.int64)
    padded_index[position] = index.ravel()
    values = prediction.ravel()
    values = np.where(np.isnan(values), -np.inf, values)  # NaN is never >= t
    order = np.argsort(values, kind="stable")
    values, position = values[order], position[order]
    levels = np.searchsorted(values, thresholds, side="left")  # pixels below each threshold
    image = np.zeros((height + 2) * (width + 2), np.uint8)
    cursor = int(levels.min())
    image[position[cursor:]] = 1
    code = _neighbour_codes(image.reshape(height + 2, width + 2))
    border = np.flatnonzero(image & (code != 255))
    stamp, fresh = np.empty(image.size, np.int32), np.zeros(image.size, np.uint8)

    previous_size, previous_rows, previous = -1, None, None
    for k in np.argsort(thresholds, kind="stable"):
        if levels[k] > cursor:
            touched = _delete(image, code, position[cursor : levels[k]], offsets, stamp)
            border = _merge(touched, border, image, fresh)
            cursor = int(levels[k])
        size = len(values) - cursor
        if size != previous_size:  # nested masks of equal size are equal
            edges = image
            if apply_thinning and size:
                edges = image.copy()
                _thin_flat(edges, code.copy(), border, offsets, stamp, fresh)
            rows = padded_index[edges.view(bool)]
            rows = rows[rows >= 0]
            if previous_rows is not None and np.array_equal(rows, previous_rows):
                matched = previous[0]  # the same pixels within reach: the same matching
            else:
                sub = pairs[rows]
                columns = np.count_nonzero(np.bincount(sub.indices, minlength=len(truth_points)))
                sub = sub if len(rows) <= columns else sub.T.tocsr()
                matched = _maximum_matching_size(sub)
            previous_size, previous_rows = size, rows
            previous = (matched, int(np.count_nonzero(edges)))
        counts[k, 0], counts[k, 2], counts[k, 3] = previous[0], previous[0], previous[1]
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

    def update_state(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """`update` for a batch ``(B, H, W, 1)`` of labels and probabilities (Keras order)."""
        for label, prediction in zip(np.asarray(y_true), np.asarray(y_pred), strict=True):
            self.update(prediction, label)

    def add_counts(self, counts: np.ndarray) -> None:
        """Add one image's (T, 4) counts computed elsewhere (e.g. by `parallel_counts`)."""
        counts = np.asarray(counts, np.int64)
        if counts.shape != (len(self.thresholds), 4):
            raise ValueError(
                f"expected counts of shape {(len(self.thresholds), 4)} (thresholds x "
                f"(cntR, sumR, cntP, sumP)), got {counts.shape}"
            )
        self.counts.append(counts)

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


def _counts_job(job: tuple) -> np.ndarray:
    prediction, label, thresholds, max_dist, apply_thinning = job
    return image_counts(prediction, label, thresholds, max_dist, apply_thinning)


def parallel_counts(
    predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    thresholds: int | Sequence[float] = 99,
    max_dist: float = 0.0075,
    apply_thinning: bool = True,
    processes: int | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """`image_counts` of many images spread over processes, each image a separate job.

    Args:
        predictions: (H, W) edge probabilities, one per image (sizes may differ).
        labels: (H, W) binary labels of the same sizes (255 = ignore).
        thresholds: 99 (0.01 .. 0.99) or explicit thresholds.
        max_dist: matching tolerance as a fraction of the image diagonal.
        apply_thinning: thin the binarised predictions.
        processes: worker processes; None uses every core (``os.cpu_count()``), 1 runs here.
        progress: show a ``tqdm`` progress bar on stderr (when tqdm is installed).

    Returns:
        The (T, 4) counts of each image, in input order; feed them to
        `BoundaryFMeasure.add_counts`.

    Example:
        >>> import numpy as np
        >>> label = np.zeros((32, 32)); label[:, 10] = 1
        >>> counts = parallel_counts([label * 0.9], [label], processes=1, progress=False)
        >>> counts[0][0].tolist()  # cntR, sumR, cntP, sumP at threshold 0.01
        [32, 32, 32, 32]
    """
    import concurrent.futures
    import multiprocessing
    import os

    if len(predictions) != len(labels):
        raise ValueError(
            f"parallel_counts got {len(predictions)} predictions for {len(labels)} labels"
        )
    values = BoundaryFMeasure(max_dist, thresholds).thresholds
    jobs = [(p, g, values, max_dist, apply_thinning) for p, g in zip(predictions, labels)]
    processes = (os.cpu_count() or 1) if processes is None else int(processes)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="edge maps", unit="image")
        except ImportError:
            bar = None
    results: list[np.ndarray] = []
    if processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_counts_job(job))
            if bar is not None:
                bar.update()
    else:
        # spawn: a forked child of a process that has started TensorFlow's threads can hang
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            for counts in pool.map(_counts_job, jobs, chunksize=1):
                results.append(counts)
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    return results
