import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.methods._loss import STEP, set_up
from tests.balancing.properties import Method


def stch_value(losses, preference, reference, mu, transform="log", eps=1e-20):
    """The paper's formula, differentiable in ``losses`` (a tf tensor)."""
    f = tf.math.log(losses + eps) if transform == "log" else losses
    return mu * tf.reduce_logsumexp(preference * (f - reference) / mu)


class TestSmoothTchebycheff(Method):
    name = "stch"
    variants = (
        {"warmup": 1, "estimate": 1},  # the state tests end an epoch after every step
        {"unit": "step", "warmup": 0, "estimate": 2, "transform": "none"},
    )

    def test_warm_up_is_the_sum_of_log_losses_then_stch_on_the_estimate(self):
        b = set_up("stch", warmup=1, estimate=2, unit="step")
        first = np.array([2.0, 0.5])
        _, w = b.combine(tf.ones(2), tf.constant(first), STEP)  # warm-up: sum log L
        np.testing.assert_allclose(w, 1 / first, rtol=1e-6)
        for losses in ([4.0, 1.0], [2.0, 3.0]):  # estimate: mean (3, 2), still sum log L
            _, w = b.combine(tf.ones(2), tf.constant(losses), STEP)
            np.testing.assert_allclose(w, 1 / np.array(losses), rtol=1e-6)
        losses = np.array([1.5, 3.0])
        objective, w = b.combine(tf.constant(losses), tf.constant(losses), STEP)
        gap = 0.5 * np.log(losses / np.array([3.0, 2.0]))  # lambda = 1/2, mu = 1
        p = np.exp(gap) / np.exp(gap).sum()
        np.testing.assert_allclose(w, 0.5 * p / losses, rtol=1e-5)
        np.testing.assert_allclose(float(objective), w.numpy() @ losses, rtol=1e-5)
        share = w.numpy() * losses  # the weights of log L_i: lambda_i p_i
        assert share[1] > share[0]  # b is further behind its reference (3 / 2 > 1.5 / 3)
        np.testing.assert_allclose(b.loss_sum.numpy(), [6.0, 4.0])
        assert int(b.clock.numpy()) == 4

    def test_weights_are_the_gradient_of_the_formula(self):
        pref, ref = np.array([0.2, 0.5, 0.3]), np.array([0.1, -0.4, 0.3])
        b = set_up("stch", tasks="abc", preference=list(pref), warmup=0, estimate=0, mu=0.3)
        losses = tf.Variable([0.7, 1.9, 0.4])
        with tf.GradientTape() as tape:
            value = stch_value(losses, pref, 0.0, 0.3)
        np.testing.assert_allclose(
            b.combine(losses, losses, STEP)[1], tape.gradient(value, losses), rtol=1e-5
        )
        raw = set_up("stch", tasks="abc", warmup=0, estimate=1, unit="step", transform="none")
        raw.loss_sum.assign(ref)  # an estimate made elsewhere: z = L_bar
        raw.loss_steps.assign(1.0)
        raw.clock.assign(1)
        with tf.GradientTape() as tape:
            value = stch_value(losses, np.full(3, 1 / 3), ref, 1.0, transform="none")
        np.testing.assert_allclose(
            raw.combine(losses, losses, STEP)[1], tape.gradient(value, losses), rtol=1e-5
        )

    def test_small_mu_weighs_the_task_furthest_behind(self):
        b = set_up("stch", tasks="abc", warmup=0, estimate=0, mu=1e-3, transform="none")
        _, w = b.combine(tf.ones(3), tf.constant([1.0, 2.0, 1.5]), STEP)
        np.testing.assert_allclose(w, [0.0, 1 / 3, 0.0], atol=1e-6)  # lambda_b p_b, p_b -> 1

    def test_the_authors_code_with_unit_preference_and_task_scale(self):
        """LibMTL: ``T mu log sum exp(log(L / L_bar) / mu)``; equal gaps keep the warm-up step."""
        b = set_up("stch", tasks="abc", preference=[1.0] * 3, scale="tasks", warmup=0, estimate=1)
        b.combine(tf.ones(3), tf.constant([1.0, 2.0, 4.0]), STEP)
        b.on_epoch_end()
        losses = tf.Variable([0.5, 1.0, 2.0])
        with tf.GradientTape() as tape:
            value = 3 * stch_value(losses, np.ones(3), tf.math.log([1.0, 2.0, 4.0]), 1.0)
        _, w = b.combine(losses, losses, STEP)
        np.testing.assert_allclose(w, tape.gradient(value, losses), rtol=1e-5)
        np.testing.assert_allclose(w, 1 / losses.numpy(), rtol=1e-5)  # all halved: = warm-up

    def test_epochs_are_counted_only_in_epoch_units(self):
        by_epoch, by_step = set_up("stch"), set_up("stch", unit="step")
        for _ in range(3):
            by_epoch.combine(tf.ones(2), tf.ones(2), STEP)
            by_step.combine(tf.ones(2), tf.ones(2), STEP)
        by_epoch.on_epoch_end()
        by_step.on_epoch_end()
        assert int(by_epoch.clock.numpy()) == 1 and int(by_step.clock.numpy()) == 3

    def test_preference_by_name_and_bad_arguments(self):
        b = set_up("stch", preference={"b": 3.0, "a": 1.0}, warmup=0, estimate=0)
        np.testing.assert_array_equal(b.preference_weights, [1.0, 3.0])
        assert balancing.get("smooth-tchebycheff").get_config()["mu"] == 1.0
        with pytest.raises(ValueError, match="2 values for 3 tasks"):
            set_up("stch", tasks="abc", preference=[0.5, 0.5])
        with pytest.raises(ValueError, match="positive and finite.*bad: \\['b'\\]"):
            set_up("stch", preference=[1.0, 0.0])
        with pytest.raises(ValueError, match="unknown: \\['z'\\], missing: \\['b'\\]"):
            set_up("stch", preference={"a": 1.0, "z": 1.0})
        with pytest.raises(ValueError, match="mu must be positive"):
            balancing.get("stch", mu=0.0)
        with pytest.raises(ValueError, match="valid: epoch, step"):
            balancing.get("stch", unit="iteration")
