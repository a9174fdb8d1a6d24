import numpy as np
import tensorflow as tf

from tests.balancing.methods._loss import STEP, set_up
from tests.balancing.properties import Method


class TestFAMO(Method):
    name = "famo"

    def test_weights_and_logit_update(self):
        b = set_up("famo", gamma=0.0)
        losses = tf.constant([1.0, 3.0])
        objective, w = b.combine(losses, losses, STEP)
        np.testing.assert_allclose(w, [0.75, 0.25], rtol=1e-6)  # z_i / L_i normalised
        np.testing.assert_allclose(float(objective), 0.75 + 0.75, rtol=1e-6)
        # task a halved its loss, task b did not move: a's logit goes down by w_lr (Adam step 1)
        b.after_step(losses, tf.constant([0.5, 3.0]), STEP)
        np.testing.assert_allclose(b.logits.numpy(), [-0.025, 0.025], rtol=1e-4)
        _, w = b.combine(losses, losses, STEP)
        assert w[0] < 0.75
        assert b.needs_losses_after_step and not b.logits.trainable

    def test_gradient_matches_the_log_objective(self):
        """d/dtheta of sum z log(L)/c equals the returned linearised objective's gradient."""
        b = set_up("famo")
        b.logits.assign([0.3, -0.2])
        losses = tf.Variable([1.5, 0.4])
        with tf.GradientTape(persistent=True) as tape:
            linear, _ = b.combine(losses, tf.stop_gradient(losses), STEP)
            z = tf.nn.softmax(b.logits)
            c = tf.stop_gradient(tf.reduce_sum(z / losses))
            log_form = tf.reduce_sum(z * tf.math.log(losses)) / c
        np.testing.assert_allclose(
            tape.gradient(linear, losses), tape.gradient(log_form, losses), 1e-5
        )
