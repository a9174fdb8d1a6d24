import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.methods._loss import STEP, set_up
from tests.balancing.properties import Method


class TestPenaltyBoundaryIntersection(Method):
    name = "pbi"

    def test_on_and_off_the_preference_ray(self):
        b = set_up("pbi")
        _, w = b.combine(tf.ones(2), tf.constant([1.0, 1.0]), STEP)
        np.testing.assert_allclose(w, [2**-0.5, 2**-0.5], rtol=1e-6)  # on the ray: d2 = 0
        # L = (2, 1): d1 u = (1.5, 1.5), v = (0.5, -0.5); w = u + 5 v / |v|
        objective, w = b.combine(tf.constant([2.0, 1.0]), tf.constant([2.0, 1.0]), STEP)
        np.testing.assert_allclose(w, [3 * 2**0.5, -(2**1.5)], rtol=1e-6)
        np.testing.assert_allclose(float(objective), w.numpy() @ [2.0, 1.0], rtol=1e-6)
        assert w[1] < 0  # the task below the ray is pushed up towards it

    def test_weights_are_the_gradient_of_d1_plus_theta_d2(self):
        pref, ideal = np.array([1.0, 2.0, 0.5]), np.array([0.1, 0.0, 0.2])
        b = set_up("pbi", tasks="abc", preference=list(pref), theta=2.5, reference=list(ideal))
        losses = tf.Variable([0.7, 1.9, 0.4], dtype=tf.float64)
        u = pref / np.linalg.norm(pref)
        with tf.GradientTape() as tape:
            shifted = losses - ideal
            d1 = tf.tensordot(shifted, u, 1)
            value = d1 + 2.5 * tf.norm(shifted - d1 * u)
        w = b.combine(tf.cast(losses, tf.float32), tf.cast(losses, tf.float32), STEP)[1]
        np.testing.assert_allclose(w, tape.gradient(value, losses), rtol=1e-5)
        flat = set_up("pbi", tasks="abc", preference=list(pref), theta=0.0)
        np.testing.assert_allclose(flat.combine(tf.ones(3), tf.ones(3), STEP)[1], u, rtol=1e-6)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="theta must be >= 0"):
            balancing.get("pbi", theta=-1.0)
        with pytest.raises(ValueError, match="reference has 1 values for 2 tasks"):
            set_up("pbi", reference=[0.0])
        with pytest.raises(ValueError, match="positive and finite"):
            set_up("pbi", preference=[1.0, -1.0])
        assert type(balancing.get("penalty_boundary_intersection")).__name__.startswith("Penalty")
