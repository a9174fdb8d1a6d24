import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import (
    GradientMethod,
    Homogeneous,
    NonConflicting,
    PermutationInvariant,
)


class TestMGDA(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
    name = "mgda"

    def equal_gradient_multiple(self, t, norm):
        return 1.0

    def test_two_orthogonal_gradients(self):
        # min ||a1 e1 + 2 a2 e2||^2 on the simplex: a1 = 0.8, a2 = 0.2 -> update (0.8, 0.4)
        update = balancing.get("mgda").aggregate(tf.constant([[1.0, 0.0], [0.0, 2.0]]))
        np.testing.assert_allclose(update.numpy(), [0.8, 0.4], atol=1e-6)

    def test_min_norm_point_is_non_conflicting_and_optimal(self):
        rng = np.random.default_rng(0)
        jac = tf.constant(rng.normal(size=(4, 30)), tf.float32)
        m = balancing.get("mgda", max_iter=1000, tol=1e-9)
        d = m.aggregate(jac).numpy()
        # KKT of the min-norm problem: g_i . d >= ||d||^2 for every task
        assert np.all(jac.numpy() @ d >= np.dot(d, d) - 1e-4)
        # no other point of the simplex (on a grid) has a smaller norm
        best = min(
            np.linalg.norm(np.array(a) @ jac.numpy())
            for a in itertools.product(np.linspace(0, 1, 11), repeat=4)
            if abs(sum(a) - 1) < 1e-9
        )
        assert np.linalg.norm(d) <= best + 1e-4

    def test_permutation_equivariant_and_degenerate_cases(self):
        rng = np.random.default_rng(1)
        jac = rng.normal(size=(3, 10)).astype(np.float32)
        d = balancing.get("mgda").aggregate(tf.constant(jac)).numpy()
        d_perm = balancing.get("mgda").aggregate(tf.constant(jac[[2, 0, 1]])).numpy()
        np.testing.assert_allclose(d, d_perm, atol=1e-5)
        same = np.stack([jac[0]] * 3)
        np.testing.assert_allclose(
            balancing.get("mgda").aggregate(tf.constant(same)), jac[0], atol=1e-5
        )
        single = balancing.get("mgda").aggregate(tf.constant(jac[:1])).numpy()
        np.testing.assert_allclose(single, jac[0], atol=1e-6)
        zeros = balancing.get("mgda").aggregate(tf.zeros([3, 10])).numpy()
        assert np.all(np.isfinite(zeros)) and np.all(zeros == 0)

    @pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
    def test_normalizations(self, normalization):
        g = tf.constant([[1.0, 0.0], [0.0, 2.0]])
        m = balancing.get("mgda", normalization=normalization)
        w = m.weights_from_gramian(
            tf.matmul(g, g, transpose_b=True), tf.constant([2.0, 1.0]), 0
        ).numpy()
        assert np.all(np.isfinite(w)) and np.all(w >= 0)
        if normalization == "l2":  # unit gradients: equal alphas 1/2, divided by the norms
            np.testing.assert_allclose(w, [0.5, 0.25], atol=1e-6)
        with pytest.raises(ValueError, match="valid: none, l2, loss, loss\\+"):
            balancing.get("mgda", normalization="unit")
