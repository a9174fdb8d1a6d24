import numpy as np

from tests.balancing.methods._loss import objective_and_grads, set_up
from tests.balancing.properties import Method


class TestIMTLL(Method):
    name = "imtl_l"

    def test_gradient_wrt_scale(self):
        b = set_up("imtl_l")
        b.log_scales.assign([0.0, np.log(0.5)])
        value, w, (_, d_s) = objective_and_grads(b, [2.0, 2.0], [b.log_scales])
        np.testing.assert_allclose(value, 2.0 + 1.0 - np.log(0.5), rtol=1e-6)
        np.testing.assert_allclose(w, [1.0, 0.5], rtol=1e-6)
        np.testing.assert_allclose(d_s, [2.0 - 1.0, 1.0 - 1.0], atol=1e-6)  # exp(s) L - 1
