"""Branched networks and the tree search of Vandenhende et al. (BMVC 2020): tree validation,
parameter counts against hard sharing and single-task networks, representation similarity, the
enumeration of trees, and the search under a budget."""

import keras
import numpy as np
import pytest

from mtl_keras.architectures import (
    build_branched,
    build_hard_sharing,
    build_single_task,
    sharing_of,
)
from mtl_keras.architectures.branched import normalize_tree
from mtl_keras.architectures.branching import (
    choose_tree,
    cka_affinity,
    enumerate_trees,
    rsa_affinity,
    search_tree,
    stage_parameter_counts,
    task_dissimilarity,
    tree_parameters,
    tree_score,
)
from mtl_keras.backbones import build_resnet
from mtl_keras.metrics import count_params
from tests.architectures.tiny import TASKS, TINY, raw_images
from tests.utils import tiny_specs

SHARED = [[list(TASKS)]] * 4
SEPARATE = [[[t] for t in TASKS]] * 4


def _specs():
    return list(tiny_specs(TASKS).values())


def test_all_shared_tree_is_hard_sharing_and_all_separate_is_single_task_networks():
    shared = build_branched(_specs(), branches=SHARED, **TINY)
    assert count_params(shared) == count_params(build_hard_sharing(_specs(), **TINY))
    # the conv heads read P5 only, so the shared trunk ends at the marked stage-4 output
    assert [layer.name for layer in sharing_of(shared).representation_layers] == ["shared_stage4"]
    separate = build_branched(_specs(), branches=SEPARATE, **TINY)
    singles = [count_params(build_single_task(s, **TINY))["params"] for s in _specs()]
    assert count_params(separate)["params"] == sum(singles)
    assert sharing_of(separate).representation_layers == ()


def test_tree_nodes_and_their_parameters():
    tree = [[list(TASKS)], [list(TASKS)], [list(TASKS)], [["semseg"], ["depth"]]]
    network = build_branched(_specs(), branches=tree, **TINY)
    names = {layer.name for layer in network.layers if isinstance(layer, keras.Model)}
    assert names == {
        "stem_semseg-depth",
        "stage1_semseg-depth",
        "stage2_semseg-depth",
        "stage3_semseg-depth",
        "stage4_semseg",
        "stage4_depth",
    }
    stage4 = stage_parameter_counts(build_resnet(10, **TINY["backbone_kwargs"]))[-1]
    hard = count_params(build_hard_sharing(_specs(), **TINY))["params"]
    assert count_params(network)["params"] == hard + stage4  # one extra copy of stage 4


def test_invalid_trees_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"stage 2 .*partition the tasks"):
        normalize_tree([[["a", "b"]], [["a"]]], ["a", "b"])
    with pytest.raises(ValueError, match=r"stage 2 group \['a', 'b'\] spans several groups"):
        normalize_tree([[["a"], ["b"]], [["a", "b"]]], ["a", "b"])
    with pytest.raises(ValueError, match="one grouping per stage after the stem"):
        build_branched(_specs(), branches=SHARED[:2], **TINY)
    assert normalize_tree([[["b", "a"]], [["b"], ["a"]]], ["a", "b"]) == (
        (("a", "b"),),
        (("a",), ("b",)),
    )


def test_tree_enumeration_counts():
    # two tasks: branch after stage 0..4 (never = hard sharing) -> 5 trees
    assert len(set(enumerate_trees(["a", "b"], 4))) == 5
    # three tasks, two stages: {abc} then any of 5 partitions, three {x|yz} then kept or split,
    # {a|b|c} then itself: 5 + 3 * 2 + 1
    trees = list(enumerate_trees(["a", "b", "c"], 2))
    assert len(trees) == len(set(trees)) == 12
    for tree in trees:
        assert normalize_tree(tree, ["a", "b", "c"]) == tree


def test_similarity_measures():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 20))
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert cka_affinity(x, x @ q) == pytest.approx(1.0)  # invariant to rotations
    assert cka_affinity(x, 3 * x + 1) == pytest.approx(1.0)  # and to scale and offset
    assert rsa_affinity(x, 2 * x + 5) == pytest.approx(1.0)  # pearson-based RDMs: affine-invariant
    assert abs(rsa_affinity(x, rng.normal(size=(12, 20)))) < 0.5
    tasks, d = task_dissimilarity({"a": [x, x], "b": [x, -x]}, "cka")
    assert tasks == ("a", "b") and d.shape == (2, 2, 2)
    np.testing.assert_allclose(d[:, 0, 0], 0.0)
    np.testing.assert_allclose(d[0, 0, 1], 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="valid: rsa, cka"):
        task_dissimilarity({"a": [x]}, "svcca")


def test_score_parameters_and_search():
    tasks = ["a", "b", "c"]
    d = np.zeros((2, 3, 3))
    d[:, 0, 1] = d[:, 1, 0] = 0.2  # a ~ b
    d[:, 0, 2] = d[:, 2, 0] = d[:, 1, 2] = d[:, 2, 1] = 0.9  # c is different
    tree = ((("a", "b", "c"),), (("a", "b"), ("c",)))
    # stage 1: max over {a, b, c} = 0.9; stage 2: mean(0.2, 0) = 0.1
    assert tree_score(tree, d, tasks) == pytest.approx(1.0)
    assert tree_parameters(tree, [10, 100], head_params=7) == 10 + 2 * 100 + 7
    best = search_tree(d, tasks, stage_params=[10, 100], budget=210)
    assert best.tree == tree and best.parameters == 210
    best = search_tree(d, tasks, stage_params=[10, 100], budget=230)  # room for c alone at 1
    assert best.tree == ((("a", "b"), ("c",)), (("a", "b"), ("c",)))
    assert best.score == pytest.approx(0.2)
    with pytest.raises(ValueError, match="hard sharing, the smallest, has 110"):
        search_tree(d, tasks, stage_params=[10, 100], budget=50)


def test_choose_tree_end_to_end_shares_everything_between_identical_networks():
    keras.utils.set_random_seed(0)
    semseg, depth = _specs()
    a = build_single_task(semseg, **TINY)
    b = build_single_task(depth, **TINY)
    b.get_layer("resnet10").set_weights(a.get_layer("resnet10").get_weights())
    budget = 10**9  # everything fits: the affinities alone decide
    result = choose_tree({"semseg": a, "depth": b}, raw_images(6), budget=budget)
    assert result.tree == ((TASKS,),) * 4 and result.score == pytest.approx(0.0, abs=1e-9)
    counts = stage_parameter_counts(a.get_layer("resnet10"))
    assert result.parameters == sum(counts)
    assert sum(counts) == count_params(a.get_layer("resnet10"))["params"]
