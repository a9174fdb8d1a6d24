import numpy as np
import pytest

from tests.balancing.methods._loss import objective_and_grads, set_up
from tests.balancing.properties import Method


class TestUncertaintyWeighting(Method):
    name = "uncertainty"

    def test_objective_and_gradient_wrt_log_variance(self):
        b = set_up("uncertainty", task_types={"b": "classification"})
        b.log_variances.assign([0.5, -1.0])
        value, w, (d_losses, d_s) = objective_and_grads(b, [2.0, 3.0], [b.log_variances])
        s, losses, k = np.array([0.5, -1.0]), np.array([2.0, 3.0]), np.array([0.5, 1.0])
        np.testing.assert_allclose(value, np.sum(k * np.exp(-s) * losses + s / 2), rtol=1e-6)
        np.testing.assert_allclose(w, k * np.exp(-s), rtol=1e-6)
        np.testing.assert_allclose(d_losses, k * np.exp(-s), rtol=1e-6)
        np.testing.assert_allclose(d_s, 0.5 - k * np.exp(-s) * losses, rtol=1e-6)
        assert b.log_variances.trainable  # stepped by the model's optimizer
        with pytest.raises(ValueError, match="unknown tasks \\['z'\\]"):
            set_up("uncertainty", task_types={"z": "regression"})

    def test_optimum_is_log_loss(self):
        b = set_up("uncertainty")
        b.log_variances.assign(np.log([2.0, 3.0]))  # s* = log L for regression tasks
        _, _, (_, d_s) = objective_and_grads(b, [2.0, 3.0], [b.log_variances])
        np.testing.assert_allclose(d_s, [0.0, 0.0], atol=1e-6)
