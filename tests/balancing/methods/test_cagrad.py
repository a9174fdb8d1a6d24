import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from mtl_keras import balancing
from mtl_keras.balancing.cagrad import cagrad_dual
from tests.balancing.properties import GradientMethod, Homogeneous, PermutationInvariant, rand


class TestCAGrad(GradientMethod, PermutationInvariant, Homogeneous):
    name = "cagrad"

    def equal_gradient_multiple(self, t, norm):
        return 1.4  # the mean, moved by c ||g0|| along itself (c = 0.4)

    def test_c_zero_is_the_mean(self):
        jac = rand(4, 9, seed=30)
        d = balancing.get("cagrad", c=0.0).aggregate(jac).numpy()
        np.testing.assert_allclose(d, jac.mean(0), rtol=1e-5)

    @pytest.mark.parametrize("seed", [31, 32, 33])
    def test_dual_matches_slsqp_and_primal_optimality(self, seed):
        jac = rand(4, 6, seed=seed)
        g = jac @ jac.T
        t, c = 4, 0.4
        b = np.full(t, 1 / t)
        r = c * np.sqrt(b @ g @ b)

        def objective(w):
            return w @ g @ b + r * np.sqrt(max(w @ g @ w, 0.0))

        best = min(
            minimize(
                objective,
                x0,
                method="SLSQP",
                bounds=[(0, 1)] * t,
                constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
                options={"ftol": 1e-14, "maxiter": 500},
            ).fun
            for x0 in (b, np.eye(t)[0], np.eye(t)[3])
        )
        w, valid = cagrad_dual(tf.constant(g), c)
        assert bool(valid) and objective(w.numpy()) <= best + 1e-8
        # the update maximises min_i g_i.d over the ball ||d - g0|| <= c ||g0||
        d = balancing.get("cagrad", c=c).aggregate(jac).numpy()
        g0 = jac.mean(0)
        assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-4)
        dirs = np.random.default_rng(0).normal(size=(2000, 6))
        ball = g0 + c * np.linalg.norm(g0) * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        assert np.min(jac @ d) >= np.max(np.min(ball @ jac.T, axis=1)) - 1e-5

    def test_scaling_switches(self):
        jac = rand(3, 5, seed=34)
        base = balancing.get("cagrad").aggregate(jac).numpy()
        for kwargs, factor in (({"rescale": 1}, 1 / 1.16), ({"rescale": 2}, 1 / 1.4)):
            np.testing.assert_allclose(
                balancing.get("cagrad", **kwargs).aggregate(jac), base * factor, 1e-5
            )
        np.testing.assert_allclose(
            balancing.get("cagrad", scale="sum").aggregate(jac), base * 3, 1e-5
        )
        with pytest.raises(ValueError, match="rescale must be 0, 1 or 2"):
            balancing.get("cagrad", rescale=3)

    def test_iterative_solver_for_many_tasks(self):
        jac = rand(12, 30, seed=35)
        g = jac @ jac.T
        b = np.full(12, 1 / 12)
        r = 0.4 * np.sqrt(b @ g @ b)
        w, valid = tf.function(cagrad_dual)(tf.constant(g), 0.4)
        exact = minimize(
            lambda w: w @ g @ b + r * np.sqrt(w @ g @ w),
            b,
            method="SLSQP",
            bounds=[(0, 1)] * 12,
            constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
            options={"ftol": 1e-14, "maxiter": 1000},
        ).fun
        value = w.numpy() @ g @ b + r * np.sqrt(w.numpy() @ g @ w.numpy())
        assert bool(valid) and abs(np.sum(w) - 1) < 1e-9 and value <= exact + 1e-3 * abs(exact)
