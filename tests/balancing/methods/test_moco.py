import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, PermutationInvariant, rand


def project_simplex(v):
    """Euclidean projection onto the probability simplex (Duchi et al., 2008), in NumPy."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, len(v) + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def moco_reference(jacs, losses, projection=True, normalize=False, beta=0.5, gamma=0.1):
    """The MoCo iteration on the vectors (beta_sigma = gamma_sigma = 0.5, rho = 0)."""
    t = len(jacs[0])
    y, lam = np.zeros_like(jacs[0]), np.full(t, 1.0 / t)
    for k, (jac, loss) in enumerate(zip(jacs, losses), start=1):
        g = jac * (loss / (np.linalg.norm(jac, axis=1) + 1e-8))[:, None] if normalize else jac
        y = y - beta / k**0.5 * (y - g)
        lam = lam - gamma / k**0.5 * (y @ y.T) @ lam
        lam = project_simplex(lam) if projection else np.exp(lam) / np.exp(lam).sum()
    return y.T @ lam, lam


class TestMoCo(GradientMethod, PermutationInvariant):
    name = "moco"
    variants = ({"normalization": "l2_loss", "weight_update": "softmax", "rho": 0.1},)

    def equal_gradient_multiple(self, t, norm):
        return 0.5  # first step: Y = beta_1 J = J / 2, lambda stays uniform

    @pytest.mark.parametrize("paper", [True, False])
    def test_three_steps_against_the_vector_iteration(self, paper):
        kwargs = {} if paper else {"normalization": "l2_loss", "weight_update": "softmax"}
        jacs = [rand(3, 7, seed=s) for s in (40, 41, 42)]
        jacs[1][1] = -jacs[1][0]  # a conflicting step
        losses = [np.array([2.0, 0.5, 1.0]), np.array([1.5, 0.4, 1.2]), np.array([1.0, 0.6, 0.3])]
        b = balancing.get("moco", **kwargs)
        for jac, loss in zip(jacs, losses):
            d = b.aggregate(tf.constant(jac, tf.float32), tf.constant(loss, tf.float32))
        ref, lam = moco_reference(jacs, losses, projection=paper, normalize=not paper)
        np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.head_weights(None, STEP), lam, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.sum(lam), 1.0, rtol=1e-6)
        assert int(b.step_count.numpy()) == 3

    def test_fixed_gradients_lead_to_the_min_norm_weights(self):
        """With Y = J held (beta_t = 1) the weight update is projected gradient descent on
        ``lambda^T G lambda``: its fixed point is MGDA's min-norm point, (0.8, 0.2) here."""
        b = balancing.get("moco", beta=1.0, beta_sigma=0.0, gamma=0.1, gamma_sigma=0.0)
        jac = tf.constant([[1.0, 0.0], [0.0, 2.0]])
        run = tf.function(lambda: b.aggregate(jac))
        for _ in range(200):
            d = run()
        np.testing.assert_allclose(b.task_weights.numpy(), [0.8, 0.2], atol=1e-4)
        np.testing.assert_allclose(d, [0.8, 0.4], atol=1e-4)

    def test_tracked_buffer_follows_the_shared_variables(self):
        b = balancing.get("moco")
        b.setup(["a", "b"])
        b.build_parameter_state([2, 3])
        assert b.tracked.shape == (2, 5) and not b.tracked.trainable
        with pytest.raises(ValueError, match="tracks 5 parameters"):
            b.aggregate(rand(2, 4, seed=0))
        with pytest.raises(ValueError, match="valid: projection, softmax"):
            balancing.get("moco", weight_update="exact")
        with pytest.raises(ValueError, match="must be >= 0"):
            balancing.get("moco", gamma=-0.1)
