import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, Homogeneous, rand


def unit(jac):
    """The first call's normalised gradients: v^ = ||g||^2, s = 1 / sqrt(||g||^2 + eps)."""
    return jac / np.sqrt(np.sum(jac**2, axis=1, keepdims=True) + 1e-8)


def pcd_reference(jac, tau):
    """Def. 4.1 on the vectors by a generic solver, rescaled to ||g_1||."""
    g = unit(jac)
    cons = [{"type": "ineq", "fun": lambda d, j=j: g[j] @ d - tau * g[j] @ g[j]}
            for j in range(1, len(g))]  # fmt: skip
    d = minimize(lambda d: 0.5 * np.sum((d - g[0]) ** 2), g[0], constraints=cons,
                 method="SLSQP", options={"ftol": 1e-15, "maxiter": 500}).x  # fmt: skip
    return d * np.linalg.norm(jac[0]) / np.linalg.norm(d)


class TestPCD(GradientMethod, Homogeneous):
    name = "pcd"
    variants = ({"tau": [0.1, 0.0], "beta": 0.5},)

    def equal_gradient_multiple(self, t, norm):
        return 1.0  # g_1 already gives every copy its share: the update is g_1

    @pytest.mark.parametrize("tau", [0.0, 0.02, 0.3])
    def test_two_tasks_closed_form(self, tau):
        jac = np.array([[1.0, 0.2, 0.0], [-2.0, 1.0, 0.5]])
        g1, g2 = unit(jac)
        mu = max(0.0, (tau * g2 @ g2 - g1 @ g2) / (g2 @ g2))  # Cor. 4.6
        d = g1 + mu * g2
        expected = d * np.linalg.norm(jac[0]) / np.linalg.norm(d)
        np.testing.assert_allclose(self.run(jac, tau=tau), expected, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("seed", [100, 101, 102])
    def test_matches_a_generic_qp_and_guarantees_secondary_progress(self, seed):
        jac = rand(4, 6, seed=seed) * np.array([[1.0], [0.1], [5.0], [2.0]])
        jac[1] = -jac[0] + 0.05 * jac[1]  # a secondary conflicting with the primary
        d = self.run(jac, tau=0.1).numpy()
        np.testing.assert_allclose(d, pcd_reference(jac, 0.1), rtol=1e-3, atol=1e-4)
        assert np.all(unit(jac)[1:] @ d > 0)  # every secondary progresses
        np.testing.assert_allclose(np.linalg.norm(d), np.linalg.norm(jac[0]), rtol=1e-5)

    def test_secondaries_are_interchangeable_and_the_primary_is_not(self):
        jac = rand(4, 7, seed=103)
        d = self.run(jac).numpy()
        np.testing.assert_allclose(self.run(jac[[0, 3, 1, 2]]), d, rtol=1e-4, atol=1e-5)
        assert not np.allclose(self.run(jac[[1, 0, 2, 3]]), d, rtol=1e-2)

    def test_secondary_loss_scale_does_not_matter(self):
        jac = rand(3, 5, seed=104)
        scaled = jac * np.array([[1.0], [1e3], [1e-2]])
        np.testing.assert_allclose(self.run(scaled), self.run(jac), rtol=1e-4, atol=1e-6)

    def test_incompatible_constraints_follow_the_primary_and_zero_primary_stops(self):
        jac = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, -1.0]])  # opposite secondaries
        np.testing.assert_allclose(self.run(jac), jac[0], rtol=1e-6)
        stopped = np.array([[0.0, 0.0], [1.0, 0.0]])
        np.testing.assert_array_equal(self.run(stopped), [0.0, 0.0])

    def test_scales_follow_the_bias_corrected_ema(self):
        jac0, jac1 = rand(3, 5, seed=105), rand(3, 5, seed=106) * np.array([[3.0], [1.0], [0.2]])
        b = balancing.get("pcd", tau=0.2, beta=0.9)
        b.aggregate(jac0, step=STEP)
        d = b.aggregate(jac1, step=STEP).numpy()
        v = 0.9 * 0.1 * np.sum(jac0**2, 1) + 0.1 * np.sum(jac1**2, 1)
        s = 1 / np.sqrt(v / (1 - 0.9**2) + 1e-8)
        np.testing.assert_allclose(b.sq_norm_ema.numpy(), v, rtol=1e-6)
        g = jac1 * s[:, None]
        cons = [
            {"type": "ineq", "fun": lambda x, j=j: g[j] @ x - 0.2 * g[j] @ g[j]} for j in (1, 2)
        ]
        x = minimize(lambda x: 0.5 * np.sum((x - g[0]) ** 2), g[0], constraints=cons,
                     method="SLSQP", options={"ftol": 1e-15, "maxiter": 500}).x  # fmt: skip
        expected = x * np.linalg.norm(jac1[0]) / np.linalg.norm(x)
        np.testing.assert_allclose(d, expected, rtol=1e-3, atol=1e-4)

    def test_arguments_are_checked(self):
        with pytest.raises(ValueError, match="tau has 1 values for 2 secondary tasks"):
            balancing.get("pcd", tau=[0.1]).aggregate(rand(3, 4, seed=0))
        with pytest.raises(ValueError, match="tau must be in"):
            balancing.get("pcd", tau=1.5)
        assert balancing.get("Priority-Constrained-Descent").tau == 0.02
        assert tf.is_tensor(self.run(rand(1, 3, seed=0)))
