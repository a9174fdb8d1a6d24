import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, PermutationInvariant

J1 = [[1.0, 0.0], [0.0, 2.0]]
J2 = [[2.0, 0.0], [1.0, 1.0]]
J3 = [[0.0, 1.0], [1.0, 0.0]]


class TestMoDo(GradientMethod, PermutationInvariant):
    name = "modo"
    variants = ({"batches": 2},)

    def equal_gradient_multiple(self, t, norm):
        return 1.0  # J J^T lambda is uniform for equal rows: lambda stays 1/T, d = g

    def test_the_weight_update_by_hand(self):
        """``G = J1 J2^T = [[2, 1], [0, 2]]``, lambda = (1/2, 1/2), gamma = rho = 0.1:
        ``lambda - 0.1 (G lambda + 0.1 lambda) = (0.345, 0.395)``, projected (shift 0.13):
        (0.475, 0.525); the direction on the third batch: ``J3^T lambda = (0.525, 0.475)``."""
        b = balancing.get("modo", gamma=0.1, rho=0.1)
        d = b.aggregate_batches(tf.constant([J1, J2, J3]), step=STEP)
        np.testing.assert_allclose(b.task_weights, [0.475, 0.525], atol=1e-6)
        np.testing.assert_allclose(d, [0.525, 0.475], atol=1e-6)

    def test_two_batches_average_their_directions(self):
        """Same weights; ``d = (J1 + J2)^T lambda / 2 = (0.975, 0.7875)``."""
        b = balancing.get("modo", gamma=0.1, rho=0.1, batches=2)
        assert b.needs.batches == 2
        d = b.aggregate_batches(tf.constant([J1, J2]), step=STEP)
        np.testing.assert_allclose(b.task_weights, [0.475, 0.525], atol=1e-6)
        np.testing.assert_allclose(d, [0.975, 0.7875], atol=1e-6)

    def test_identical_batches_and_a_zero_step_size(self):
        """One batch: ``lambda <- P(lambda - gamma (G + rho I) lambda)``, here (0.575, 0.425);
        gamma = 0 keeps the static weights 1/T."""
        b = balancing.get("modo", gamma=0.1, rho=0.1)
        np.testing.assert_allclose(b.aggregate(tf.constant(J1)), [0.575, 0.85], atol=1e-6)
        static = balancing.get("modo", gamma=0.0)
        d = static.aggregate_batches(tf.constant([J1, J2, J3]), step=STEP)
        np.testing.assert_allclose(d, [0.5, 0.5], atol=1e-7)

    def test_refusals(self):
        with pytest.raises(ValueError, match="batches=3 .* or batches=2"):
            balancing.get("modo", batches=4)
        with pytest.raises(ValueError, match="gamma >= 0 and rho >= 0"):
            balancing.get("modo", gamma=-1.0)
        assert balancing.get("modo").get_config()["batches"] == 3
