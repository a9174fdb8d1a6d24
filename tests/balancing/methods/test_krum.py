import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import GradientMethod, Homogeneous, PermutationInvariant, rand


def krum_reference(jac, f, m, squared=True):
    """Blanchard et al.'s (Multi-)Krum on the vectors."""
    t = len(jac)
    dist = np.array([[np.sum((a - b) ** 2) for b in jac] for a in jac])
    if not squared:
        dist = np.sqrt(dist)
    scores = [np.sort(np.delete(dist[i], i))[: t - f - 2].sum() for i in range(t)]
    return jac[np.argsort(scores)[:m]].mean(0)


class TestKrum(GradientMethod, PermutationInvariant, Homogeneous):
    name = "krum"

    def equal_gradient_multiple(self, t, norm):
        return 1.0

    @pytest.mark.parametrize(("f", "m"), [(0, 1), (2, 1), (2, 3), (1, 2)])
    def test_matches_the_vector_rule(self, f, m):
        jac = rand(7, 5, seed=60 + f + m)
        d = balancing.get("krum", n_byzantine=f, n_selected=m).aggregate(jac).numpy()
        np.testing.assert_allclose(d, krum_reference(jac, f, m), rtol=1e-5, atol=1e-6)

    def test_squared_distances_as_the_paper_not_as_torchjd(self):
        # scores differ by the square: find rows where the two rules pick different vectors
        for seed in itertools.count(70):
            jac = rand(5, 3, seed=seed)
            paper, torchjd = krum_reference(jac, 1, 1), krum_reference(jac, 1, 1, False)
            if not np.allclose(paper, torchjd):
                break
        np.testing.assert_allclose(
            balancing.get("krum", n_byzantine=1).aggregate(jac), paper, 1e-5, 1e-6
        )
        np.testing.assert_allclose(
            balancing.get("krum", n_byzantine=1, squared=False).aggregate(jac), torchjd, 1e-5, 1e-6
        )

    def test_outliers_are_never_selected(self):
        rng = np.random.default_rng(71)
        honest = 1.0 + 0.1 * rng.normal(size=(5, 4))
        outliers = 50.0 * rng.normal(size=(2, 4))
        jac = tf.constant(np.concatenate([outliers[:1], honest, outliers[1:]]), tf.float32)
        b = balancing.get("krum", n_byzantine=2, n_selected=3)
        b.setup([f"t{i}" for i in range(7)])
        w = b.weights_from_gramian(tf.matmul(jac, jac, transpose_b=True), None, 0).numpy()
        assert w[0] == w[6] == 0.0 and np.isclose(w.sum(), 1.0)

    def test_too_few_rows_for_a_score_tie_and_give_the_mean(self):
        jac = rand(3, 4, seed=72)
        d = balancing.get("krum", n_byzantine=1).aggregate(jac).numpy()  # 3 - 1 - 2 = 0
        np.testing.assert_allclose(d, jac.mean(0), rtol=1e-5)
        with pytest.raises(ValueError, match="selects n_selected=4 rows but got 3 tasks"):
            balancing.get("krum", n_selected=4).aggregate(jac)

    def test_weights_are_a_selection(self):
        jac = tf.constant(rand(6, 5, seed=73), tf.float32)
        b = balancing.get("krum", n_byzantine=1, n_selected=2)
        b.setup([f"t{i}" for i in range(6)])
        w = b.weights_from_gramian(tf.matmul(jac, jac, transpose_b=True), None, 0).numpy()
        assert sorted(w.tolist()) == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
