"""Choosing a branched multi-task tree (Vandenhende et al., "Branched Multi-Task Networks: Deciding
What Layers to Share", BMVC 2020).

1. Train one single-task network per task (same backbone).
2. **Task affinities per stage** from representation similarity on the same K images: for every
   task network and stage, the stage's features of each image (average-pooled to a
   ``grid x grid`` map and flattened). Two measures:

   * ``"rsa"`` (representation similarity analysis, as in the paper): a representation
     dissimilarity matrix per task, ``RDM[a, b] = 1 - pearson(f_a, f_b)`` over image pairs, and
     the affinity of two tasks = Spearman's rank correlation of their RDMs' upper triangles;
   * ``"cka"`` (linear centred kernel alignment, Kornblith et al., ICML 2019):
     ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on centred features.

   The dissimilarity is ``1 - affinity``.
3. **The tree**: among all trees (a grouping per stage, refined going deeper) whose parameter count
   fits the budget, the one with the lowest dissimilarity score
   ``sum_s mean_(groups g at s) max_(i, j in g) D[s, i, j]`` (complete linkage; a single-task
   group scores 0), ties broken by fewer parameters.

Example:
    >>> d = np.zeros((4, 2, 2)); d[2:, 0, 1] = d[2:, 1, 0] = 1.0  # tasks differ at stages 3-4
    >>> result = search_tree(d, ["semseg", "depth"], stage_params=[1, 2, 4, 8], budget=23)
    >>> result.tree[-1], result.parameters  # branch at stage 4: 1 + 2 + 4 + 2 * 8
    ((('semseg',), ('depth',)), 23)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from scipy import stats

from mtl_keras.architectures._blocks import split_stages, stage_layout
from mtl_keras.architectures.branched import Tree

METHODS = ("rsa", "cka")


# --- features ------------------------------------------------------------------------------------


def _backbone_of(network: keras.Model) -> keras.Model:
    """The nested backbone (a functional model returning a pyramid dict) of a network."""
    for layer in network.layers:
        if isinstance(layer, keras.Model) and isinstance(layer.output, dict):
            if {"P2", "P5"} <= set(layer.output):
                return layer
    raise ValueError(
        f"network {network.name!r} has no nested backbone returning a pyramid dict; pass "
        "single-task networks built by mtl_keras.architectures.build_single_task"
    )


def stage_features(network: keras.Model, images, *, grid: int = 4, batch_size: int = 8) -> list:
    """Per stage 1..4, the ``(K, D)`` features of a single-task network on K images.

    Every stage output (all branches for HRNet) is average-pooled to ``grid x grid`` (TensorFlow
    ``"area"`` resizing) and flattened; branches are concatenated.

    Args:
        network: a single-task network (raw images in, as built by ``build_single_task``).
        images: ``(K, H, W, 3)`` raw images.
        grid: spatial size of the pooled features.
        batch_size: images per forward pass.
    """
    backbone = _backbone_of(network)
    normalize = network.get_layer("normalize")
    layout = stage_layout(backbone)
    stages = split_stages(backbone)
    keep = [k for k, name in enumerate(layout.names) if name != "stem"]
    images = np.asarray(images)
    out: list[list[np.ndarray]] = [[] for _ in keep]
    for start in range(0, len(images), batch_size):
        x = [normalize(tf.convert_to_tensor(images[start : start + batch_size], tf.float32))]
        for k, stage in enumerate(stages):
            x = stage(x, training=False)
            x = list(x) if isinstance(x, (list, tuple)) else [x]
            if k in keep:
                pooled = [tf.image.resize(t, (grid, grid), method="area") for t in x]
                flat = [tf.reshape(p, (p.shape[0], -1)) for p in pooled]
                out[keep.index(k)].append(np.concatenate([f.numpy() for f in flat], axis=1))
    return [np.concatenate(chunks, axis=0) for chunks in out]


# --- affinities ----------------------------------------------------------------------------------


def rdm(features: np.ndarray) -> np.ndarray:
    """Representation dissimilarity matrix ``1 - pearson(f_a, f_b)`` of K feature vectors."""
    f = np.asarray(features, np.float64)
    f = f - f.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.where(norms > 0, norms, 1.0)
    return 1.0 - f @ f.T


def rsa_affinity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of the upper triangles of the RDMs of two ``(K, D)`` feature sets."""
    upper = np.triu_indices(len(a), k=1)
    rho = stats.spearmanr(rdm(a)[upper], rdm(b)[upper]).statistic
    return float(np.nan_to_num(rho))


def cka_affinity(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA of two ``(K, D)`` feature sets (Kornblith et al., ICML 2019)."""
    x = np.asarray(a, np.float64) - np.mean(a, axis=0)
    y = np.asarray(b, np.float64) - np.mean(b, axis=0)
    kx, ky = x @ x.T, y @ y.T  # Gram form: cheap when D >> K
    denominator = np.sqrt(np.sum(kx * kx) * np.sum(ky * ky))
    return float(np.sum(kx * ky) / denominator) if denominator > 0 else 0.0


def task_dissimilarity(
    features: Mapping[str, Sequence[np.ndarray]], method: str = "rsa"
) -> tuple[tuple[str, ...], np.ndarray]:
    """``1 - affinity`` per stage and task pair from :func:`stage_features` of every task.

    Returns:
        The task order and the ``(S, T, T)`` dissimilarities (zero diagonal).
    """
    if method not in METHODS:
        raise ValueError(f"unknown similarity method {method!r}; valid: {', '.join(METHODS)}")
    affinity = rsa_affinity if method == "rsa" else cka_affinity
    tasks = tuple(features)
    n_stages = {len(v) for v in features.values()}
    if len(n_stages) != 1:
        raise ValueError(f"every task needs features of the same stages, got {n_stages} counts")
    s_count = n_stages.pop()
    d = np.zeros((s_count, len(tasks), len(tasks)))
    for s in range(s_count):
        for i, j in itertools.combinations(range(len(tasks)), 2):
            value = 1.0 - affinity(features[tasks[i]][s], features[tasks[j]][s])
            d[s, i, j] = d[s, j, i] = value
    return tasks, d


# --- trees ---------------------------------------------------------------------------------------


def _partitions(items: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], ...]]:
    """All set partitions of ``items`` (groups keep the items' order)."""
    if not items:
        yield ()
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield ((first,), *partition)
        for i, group in enumerate(partition):
            yield (*partition[:i], (first, *group), *partition[i + 1 :])


def enumerate_trees(tasks: Sequence[str], num_stages: int = 4) -> Iterator[Tree]:
    """Every tree: a partition of ``tasks`` per stage, each refining the previous one."""
    tasks = tuple(tasks)
    order = {t: i for i, t in enumerate(tasks)}

    def canon(groups):
        return tuple(sorted(groups, key=lambda g: order[g[0]]))

    def extend(prefix):
        if len(prefix) == num_stages:
            yield tuple(prefix)
            return
        refinements = [list(_partitions(group)) for group in prefix[-1]]
        for choice in itertools.product(*refinements):
            groups = canon(tuple(g for part in choice for g in part))
            yield from extend([*prefix, groups])

    for first in _partitions(tasks):
        yield from extend([canon(first)])


def tree_score(tree: Tree, dissimilarity: np.ndarray, tasks: Sequence[str]) -> float:
    """``sum_s mean_g max_(i, j in g) D[s, i, j]`` (0 for single-task groups)."""
    index = {t: i for i, t in enumerate(tasks)}
    total = 0.0
    for s, groups in enumerate(tree):
        worst = [
            max(
                (dissimilarity[s, index[a], index[b]] for a, b in itertools.combinations(g, 2)),
                default=0.0,
            )
            for g in groups
        ]
        total += float(np.mean(worst))
    return total


def tree_parameters(tree: Tree, stage_params: Sequence[int], head_params: int = 0) -> int:
    """Parameters of a tree: every group holds a copy of its stage, plus the heads."""
    return int(sum(len(groups) * p for groups, p in zip(tree, stage_params, strict=True))) + int(
        head_params
    )


def stage_parameter_counts(backbone: keras.Model) -> list[int]:
    """Trainable parameters of stages 1..4 of a backbone (the stem counted with stage 1)."""
    layout = stage_layout(backbone)
    counts = [
        sum(int(np.prod(v.shape)) for v in stage.trainable_weights)
        for stage in split_stages(backbone)
    ]
    if layout.names[0] == "stem":
        counts = [counts[0] + counts[1], *counts[2:]]
    return counts


@dataclasses.dataclass(frozen=True)
class BranchingResult:
    """The chosen tree, its dissimilarity score and parameter count."""

    tree: Tree
    score: float
    parameters: int


def search_tree(
    dissimilarity: np.ndarray,
    tasks: Sequence[str],
    *,
    stage_params: Sequence[int],
    budget: int,
    head_params: int = 0,
) -> BranchingResult:
    """The lowest-score tree with at most ``budget`` parameters (exhaustive search).

    Args:
        dissimilarity: ``(S, T, T)`` task dissimilarities per stage (:func:`task_dissimilarity`).
        tasks: the task order of ``dissimilarity``.
        stage_params: parameters of one copy of each of the S stages
            (:func:`stage_parameter_counts`).
        budget: the maximal parameter count of the tree (stages, plus ``head_params``).
        head_params: parameters of all heads together (the same for every tree).

    Raises:
        ValueError: no tree fits the budget (the smallest one is hard sharing).
    """
    d = np.asarray(dissimilarity, np.float64)
    if d.shape != (len(stage_params), len(tasks), len(tasks)):
        raise ValueError(
            f"dissimilarity has shape {d.shape}; expected (stages, tasks, tasks) = "
            f"({len(stage_params)}, {len(tasks)}, {len(tasks)})"
        )
    best = None
    for tree in enumerate_trees(tasks, len(stage_params)):
        params = tree_parameters(tree, stage_params, head_params)
        if params > budget:
            continue
        key = (tree_score(tree, d, tasks), params)
        if best is None or key < best[0]:
            best = (key, tree)
    if best is None:
        smallest = tree_parameters(
            tuple((tuple(tasks),) for _ in stage_params), stage_params, head_params
        )
        raise ValueError(
            f"no tree fits the budget of {budget:,} parameters; hard sharing, the smallest, has "
            f"{smallest:,}. Raise the budget."
        )
    (score, params), tree = best
    return BranchingResult(tree, score, params)


def choose_tree(
    networks: Mapping[str, keras.Model],
    images,
    *,
    budget: int,
    method: str = "rsa",
    grid: int = 4,
) -> BranchingResult:
    """Steps 2-3 end to end: trained single-task ``networks`` (one per task) and K images.

    The stage parameter counts come from the first network's backbone; head parameters are not
    counted (they are the same for every tree).
    """
    features = {t: stage_features(n, images, grid=grid) for t, n in networks.items()}
    tasks, d = task_dissimilarity(features, method)
    params = stage_parameter_counts(_backbone_of(next(iter(networks.values()))))
    return search_tree(d, tasks, stage_params=params, budget=budget)
