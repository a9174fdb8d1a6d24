import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.balancing.fairgrad import fair_weights
from tests.balancing.properties import (
    GradientMethod,
    Homogeneous,
    NonConflicting,
    PermutationInvariant,
    jacobian,
    rand,
)

SCALED = np.array([[0.01], [1.0], [10.0], [0.5], [3.0]])  # rows of very different norms


def backward_error(g, w, alpha):
    """|G w - w^(-1/alpha)| relative to the size of its terms, per task."""
    return np.abs(g @ w - w ** (-1 / alpha)) / (np.abs(g) @ w + w ** (-1 / alpha))


class TestFairGrad(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
    name = "fairgrad"
    scaling_power = 0.0  # (1 - alpha) / (1 + alpha) with the default alpha = 1

    def equal_gradient_multiple(self, t, norm):
        # T copies of g: T w ||g||^2 = w^(-1/alpha), so w = (T ||g||^2)^(-alpha / (1 + alpha))
        return t * (t * norm**2) ** -0.5

    @pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
    @pytest.mark.parametrize("seed", [50, 51, 52])
    def test_weights_solve_the_fairness_equation(self, alpha, seed):
        jac = rand(5, 8, seed=seed) * SCALED
        w = fair_weights(tf.constant(jac @ jac.T), alpha).numpy()
        assert np.all(w > 0)
        assert np.max(backward_error(jac @ jac.T, w, alpha)) < 1e-10
        d = balancing.get("fairgrad", alpha=alpha).aggregate(jac).numpy()
        # each task's progress g_i . d is w_i^(-1/alpha) > 0: a larger alpha evens them out
        np.testing.assert_allclose(jac @ d, w ** (-1 / alpha), rtol=1e-3)

    def test_alpha_one_is_nash_mtl(self):
        jac = rand(4, 9, seed=53)
        np.testing.assert_allclose(
            self.run(jac), balancing.get("nash_mtl").aggregate(jac), rtol=1e-5, atol=1e-6
        )

    @pytest.mark.parametrize("alpha", [0.5, 2.0])
    def test_scaling_power_follows_alpha(self, alpha):
        jac, c = jacobian(3, 7, seed=6), 3.7
        d = self.run(jac, alpha=alpha).numpy()
        expected = c ** ((1 - alpha) / (1 + alpha)) * d
        np.testing.assert_allclose(self.run(c * jac, alpha=alpha), expected, rtol=2e-4)

    def test_larger_alpha_favours_the_slowest_task(self):
        jac = rand(3, 6, seed=54) * np.array([[0.2], [1.0], [3.0]])
        spread = []
        for alpha in (0.5, 1.0, 4.0):
            progress = jac @ balancing.get("fairgrad", alpha=alpha).aggregate(jac).numpy()
            spread.append(progress.max() / progress.min())
        assert spread[0] > spread[1] > spread[2] >= 1.0

    def test_zero_gradient_task_gets_the_mean_weight_and_alpha_is_checked(self):
        jac = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
        w = fair_weights(tf.constant(jac @ jac.T), 2.0).numpy()
        # g_1: w = w^(-1/2) -> 1; g_3: 16 w = w^(-1/2) -> 16^(-2/3)
        np.testing.assert_allclose(w[[0, 2]], [1.0, 16 ** (-2 / 3)], rtol=1e-10)
        np.testing.assert_allclose(w[1], w[[0, 2]].mean(), rtol=1e-10)
        with pytest.raises(ValueError, match="alpha must be positive"):
            balancing.get("fairgrad", alpha=0.0)
