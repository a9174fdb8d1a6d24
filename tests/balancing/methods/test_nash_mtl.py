import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.balancing.nash_mtl import nash_weights
from tests.balancing.properties import (
    STEP,
    GradientMethod,
    Homogeneous,
    NonConflicting,
    PermutationInvariant,
    rand,
)


class TestNashMTL(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
    name = "nash_mtl"
    variants = ({"update_every": 2},)
    scaling_power = 0.0  # G a = 1/a: a scales as 1/c, so d = J^T a does not change

    def equal_gradient_multiple(self, t, norm):
        return np.sqrt(t) / norm

    @pytest.mark.parametrize("seed", [50, 51, 52])
    def test_solution_satisfies_g_a_equals_one_over_a(self, seed):
        jac = rand(5, 8, seed=seed) * np.array([[0.01], [1.0], [10.0], [0.5], [3.0]])
        g = jac @ jac.T
        a = nash_weights(tf.constant(g)).numpy()
        assert np.all(a > 0)
        np.testing.assert_allclose(g @ a, 1 / a, rtol=1e-8)
        d = balancing.get("nash_mtl").aggregate(jac).numpy()
        np.testing.assert_allclose(jac @ d, 1 / a, rtol=1e-3)  # d . g_i = 1 / a_i
        np.testing.assert_allclose(d @ d, 5.0, rtol=1e-3)

    def test_frobenius_normalisation_and_update_every(self):
        jac = rand(3, 6, seed=53) * 4.0
        g = tf.constant(jac @ jac.T, tf.float32)
        paper = balancing.get("nash_mtl")
        paper.setup(["a", "b", "c"])
        official = balancing.get("nash_mtl", normalization="frobenius")
        official.setup(["a", "b", "c"])
        a = paper.weights_from_gramian(g, None, STEP).numpy()
        b = official.weights_from_gramian(g, None, STEP).numpy()
        np.testing.assert_allclose(b, a * np.sqrt(np.linalg.norm(jac @ jac.T)), rtol=1e-4)
        slow = balancing.get("nash_mtl", update_every=2)
        slow.setup(["a", "b", "c"])
        w0 = slow.weights_from_gramian(g, None, tf.constant(0, tf.int64))
        w1 = slow.weights_from_gramian(tf.eye(3), None, tf.constant(1, tf.int64))
        w2 = slow.weights_from_gramian(tf.eye(3), None, tf.constant(2, tf.int64))
        np.testing.assert_allclose(w1, w0)  # reused in between
        np.testing.assert_allclose(w2, np.ones(3), rtol=1e-6)  # G = I -> a = 1

    def test_zero_gradient_task_gets_the_mean_weight(self):
        jac = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
        a = nash_weights(tf.constant(jac @ jac.T)).numpy()
        np.testing.assert_allclose(a, [1.0, 0.625, 0.25], rtol=1e-8)
