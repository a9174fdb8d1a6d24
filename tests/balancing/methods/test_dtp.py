import numpy as np
import tensorflow as tf

from tests.balancing.methods._loss import STEP, set_up
from tests.balancing.properties import Method


class TestDynamicTaskPrioritization(Method):
    name = "dtp"
    variants = ({"loss_scale": "none"},)

    def test_metric_and_loss_kpis(self):
        b = set_up("dtp", kpi="metric", gamma={"b": 2.0}, alpha=0.5)
        np.testing.assert_array_equal(b.combine(tf.ones(2), None, STEP)[1], [1.0, 1.0])
        b.observe_kpi([0.5, 0.9])
        b.observe_kpi([0.7, 0.5])  # moving average: (0.6, 0.7)
        k = np.array([0.6, 0.7])
        _, w = b.combine(tf.ones(2), None, STEP)
        np.testing.assert_allclose(w, -((1 - k) ** np.array([1.0, 2.0])) * np.log(k), rtol=1e-5)
        proxy = set_up("dtp")
        _, w = proxy.combine(tf.ones(2), tf.constant([2.0, 5.0]), STEP)
        np.testing.assert_allclose(w, [1 - np.exp(-1)] * 2, rtol=1e-5)  # kpi = exp(-1) for both
        _, w = proxy.combine(tf.ones(2), tf.constant([1.0, 5.0]), STEP)
        k = 0.1 * np.exp(-np.array([0.5, 1.0])) + 0.9 * np.exp(-1.0)
        np.testing.assert_allclose(w, -(1 - k) * np.log(k), rtol=1e-5)
        assert w[0] < w[1]  # the task that improved gets less weight
