import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, Homogeneous, PermutationInvariant, rand


class TestDBMTL(GradientMethod, PermutationInvariant, Homogeneous):
    name = "db_mtl"
    variants = ({"beta": 0.5},)

    def equal_gradient_multiple(self, t, norm):
        return 0.1 * t  # first step: the EMA holds (1 - beta) g, every task rescaled to it

    def test_ema_over_two_steps(self):
        jac0, jac1 = rand(2, 5, seed=90), rand(2, 5, seed=91)
        losses0, losses1 = np.array([2.0, 0.5]), np.array([1.0, 4.0])
        b = balancing.get("db_mtl")
        b.setup(["a", "b"])
        b.build_parameter_state([2, 3])
        b.aggregate(jac0, tf.constant(losses0, tf.float32))
        d = b.aggregate(jac1, tf.constant(losses1, tf.float32)).numpy()
        buf = 0.1 * jac0 / losses0[:, None]
        buf = 0.9 * buf + 0.1 * jac1 / losses1[:, None]
        norms = np.linalg.norm(buf, axis=1)
        np.testing.assert_allclose(d, (norms.max() / norms) @ buf, rtol=1e-5)
        np.testing.assert_allclose(b.grad_buffer.numpy(), buf, rtol=1e-5)
        head = b.head_weights(tf.constant(losses1, tf.float32), STEP)
        np.testing.assert_allclose(head, 1 / losses1)
        with pytest.raises(ValueError, match="holds 5 parameters"):
            b.aggregate(rand(2, 4, seed=0))
