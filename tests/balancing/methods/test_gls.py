import numpy as np
import tensorflow as tf

from tests.balancing.methods._loss import STEP, objective_and_grads, set_up
from tests.balancing.properties import Method


class TestGeometricLossStrategy(Method):
    name = "gls"

    def test_is_the_geometric_mean_with_its_gradient(self):
        b = set_up("gls", tasks=("a", "b", "c"))
        value, w, (d_losses,) = objective_and_grads(b, [1.0, 4.0, 2.0], [])
        np.testing.assert_allclose(value, 2.0, rtol=1e-6)  # (1 * 4 * 2)^(1/3)
        np.testing.assert_allclose(d_losses, 2.0 / (3 * np.array([1.0, 4.0, 2.0])), rtol=1e-6)
        many = set_up("gls", tasks=[f"t{i}" for i in range(300)])
        big = tf.fill([300], 1e3)
        np.testing.assert_allclose(float(many.combine(big, big, STEP)[0]), 1e3, rtol=1e-5)
