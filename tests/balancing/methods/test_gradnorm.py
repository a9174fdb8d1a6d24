import numpy as np
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, Homogeneous, PermutationInvariant


class TestGradNorm(GradientMethod, PermutationInvariant, Homogeneous):
    name = "gradnorm"

    def equal_gradient_multiple(self, t, norm):
        return t  # first step: all weights 1

    def test_first_update_and_renormalisation(self):
        b = balancing.get("gradnorm")
        b.setup(["a", "b"])
        g = tf.constant(np.diag([1.0, 9.0]), tf.float32)  # norms 1 and 3, mean weighted norm 2
        w0 = b.weights_from_gramian(g, tf.constant([2.0, 5.0]), STEP).numpy()
        np.testing.assert_allclose(w0, [1.0, 1.0])
        # dL/dw = sign(w n - 2) n = (-1, 3): Adam's first step moves each weight by lr
        np.testing.assert_allclose(b.task_weights.numpy(), [1.025, 0.975], rtol=1e-6)
        np.testing.assert_allclose(b.initial_losses.numpy(), [2.0, 5.0])
        # a task whose loss falls more slowly gets a larger target and weight
        for s in range(1, 40):
            w = b.weights_from_gramian(tf.eye(2), tf.constant([2.0, 2.5]), tf.constant(s, tf.int64))
        w = w.numpy()
        assert w[0] > w[1] and abs(w.sum() - 2.0) < 1e-5
