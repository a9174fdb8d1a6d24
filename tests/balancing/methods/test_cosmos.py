import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.methods._loss import STEP, set_up
from tests.balancing.properties import Method


class TestCOSMOS(Method):
    name = "cosmos"

    def test_weights_are_the_gradient_of_the_penalised_sum(self):
        r = np.array([0.2, 0.5, 0.3])
        b = set_up("cosmos", tasks="abc", preference=list(r), penalty=1.5)
        losses = tf.Variable([0.7, 1.9, 0.4], dtype=tf.float64)
        with tf.GradientTape() as tape:
            cos = tf.tensordot(losses, r, 1) / (tf.norm(losses) * np.linalg.norm(r))
            value = tf.tensordot(losses, r, 1) - 1.5 * cos
        objective, w = b.combine(tf.cast(losses, tf.float32), tf.cast(losses, tf.float32), STEP)
        np.testing.assert_allclose(w, tape.gradient(value, losses), rtol=1e-5)
        np.testing.assert_allclose(float(objective), w.numpy() @ losses.numpy(), rtol=1e-5)

    def test_on_the_ray_zero_losses_and_no_penalty_give_the_preference(self):
        b = set_up("cosmos", preference=[0.25, 0.75])
        for losses in ([1.0, 3.0], [0.0, 0.0]):  # the cosine is at its maximum / undefined
            _, w = b.combine(tf.ones(2), tf.constant(losses), STEP)
            np.testing.assert_allclose(w, [0.25, 0.75], rtol=1e-6, atol=1e-7)
        linear = set_up("cosmos", preference=[0.25, 0.75], penalty=0.0)
        np.testing.assert_allclose(linear.combine(tf.ones(2), tf.ones(2), STEP)[1], [0.25, 0.75])
        uniform = set_up("cosmos", tasks="abcd")
        np.testing.assert_allclose(uniform.preference_weights, [0.25] * 4)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="penalty must be >= 0"):
            balancing.get("cosmos", penalty=-0.1)
        with pytest.raises(ValueError, match="positive and finite.*bad: \\['a'\\]"):
            set_up("cosmos", preference=[float("nan"), 1.0])

    def test_losses_below_the_ray_get_negative_weights(self):
        # A uniform preference asks for equal losses: the small ones are trained upward.
        b = set_up("cosmos", tasks="abcd")
        losses = tf.constant([0.52, 0.70, 0.19, 0.05])
        w = b.combine(losses, losses, STEP)[1].numpy()
        assert w[0] > 0 and w[1] > 0 and w[2] < 0 and w[3] < 0
        assert w[3] < w[2]  # the further below the ray, the stronger the push
