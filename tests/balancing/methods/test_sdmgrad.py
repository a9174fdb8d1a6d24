import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, PermutationInvariant, jacobian, rand


def project_simplex(v):
    """Euclidean projection onto the probability simplex (Duchi et al., 2008), in NumPy."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def sdmgrad_reference(steps, lam=0.3, niter=20, step_size=5.0, momentum=0.5):
    """The SDMGrad iteration on the vectors; ``steps``: per step, the three mini-batches' (T, P)
    Jacobians (weights from the first two, direction on the third)."""
    t = len(steps[0][0])
    w = np.full(t, 1.0 / t)
    for j1, j2, j3 in steps:
        g = j1 @ j2.T
        g = g / np.mean(np.sqrt(np.maximum(np.diag(g), 0.0))) ** 2
        b = np.zeros(t)
        for _ in range(niter):
            b = momentum * b + g @ (w + lam / t)
            w = project_simplex(w - step_size * b)
        d = j3.T @ (w + lam / t) / (1.0 + lam)
    return d, w


class TestSDMGrad(GradientMethod, PermutationInvariant):
    name = "sdmgrad"
    variants = ({"lam": 0.6, "niter": 5},)

    def equal_gradient_multiple(self, t, norm):
        return 1.0  # the normalised Gramian is all ones: w stays uniform, d = g

    @pytest.mark.parametrize("kwargs", [{}, {"lam": 0.6, "step_size": 0.5, "niter": 50}])
    def test_two_steps_on_three_batches_against_the_vector_iteration(self, kwargs):
        steps = [[rand(3, 8, seed=10 * s + a) for a in range(3)] for s in range(2)]
        b = balancing.get("sdmgrad", **kwargs)
        for jacs in steps:
            d = b.aggregate_batches(tf.constant(np.stack(jacs), tf.float32), step=STEP)
        ref, w = sdmgrad_reference(steps, **kwargs)
        np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.task_weights, w, rtol=1e-4, atol=1e-5)

    def test_identical_batches_give_the_deterministic_form(self):
        """On one mini-batch three times and a converged inner problem: MGDA's min-norm point
        for lam = 0, the mean gradient for a large lam."""
        jac = rand(3, 10, seed=3).astype(np.float32)
        solved = {"niter": 2000, "step_size": 0.2}
        mgda = balancing.get("mgda", max_iter=2000, tol=1e-9).aggregate(jac)
        np.testing.assert_allclose(
            balancing.get("sdmgrad", lam=0.0, **solved).aggregate(jac), mgda, atol=2e-4
        )
        same = balancing.get("sdmgrad").aggregate_batches(np.stack([jac] * 3))
        np.testing.assert_allclose(same, balancing.get("sdmgrad").aggregate(jac), 1e-6, 1e-6)
        big = balancing.get("sdmgrad", lam=1e4, **solved).aggregate(jac)
        np.testing.assert_allclose(big, jac.mean(0), rtol=1e-3, atol=1e-4)

    @pytest.mark.parametrize("c", [3.7, 0.01])
    def test_scale_invariant_weights(self, c):
        """``d(cJ) = c d(J)``: the Gramian is normalised. (Checked with a converging inner step:
        the default one amplifies float32 rounding of the scaled input.)"""
        jac = jacobian(3, 7, seed=6)
        d = self.run(jac, step_size=0.5).numpy()
        np.testing.assert_allclose(self.run(c * jac, step_size=0.5), c * d, rtol=2e-4, atol=1e-6)

    def test_the_trainer_input_and_its_refusals(self):
        b = balancing.get("sdmgrad")
        assert b.needs.paths == {"multi_batch": "cross_gramians"} and b.needs.batches == 3
        with pytest.raises(ValueError, match=r"takes 3 mini-batches: a \(3, T, P\) stack"):
            b.aggregate_batches(tf.zeros([2, 3, 4]))
        with pytest.raises(ValueError, match="lam >= 0, step_size > 0 and 0 <= momentum < 1"):
            balancing.get("sdmgrad", lam=-1.0)
        with pytest.raises(ValueError, match="niter must be an integer >= 1"):
            balancing.get("sdmgrad", niter=0)
