import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import (
    STEP,
    GradientMethod,
    Homogeneous,
    PermutationInvariant,
    gram,
    rand,
)


class TestCRMOGM(GradientMethod, PermutationInvariant, Homogeneous):
    name = "cr_mogm"
    variants = ({"normalization": "l2", "scale": "tasks"},)

    def equal_gradient_multiple(self, t, norm):
        return 1.0  # the averaged weights stay on the simplex

    def test_two_steps_average_mgda_weights(self):
        jacs = [rand(3, 6, seed=s) for s in (50, 51)]
        b = balancing.get("cr_mogm", momentum=0.7)
        b.setup(["a", "b", "c"])
        mgda = balancing.get("mgda")
        expected = np.full(3, 1 / 3)
        for jac in jacs:
            current = mgda.weights_from_gramian(gram(jac), tf.ones(3), STEP).numpy()
            expected = 0.7 * expected + 0.3 * current
            w = b.weights_from_gramian(gram(jac), tf.ones(3), STEP)
        np.testing.assert_allclose(w, expected, rtol=1e-5)
        np.testing.assert_allclose(b.averaged.numpy(), expected, rtol=1e-5)

    def test_momentum_zero_is_mgda_and_one_is_the_mean(self):
        jac = rand(3, 6, seed=52)
        mgda = balancing.get("mgda").aggregate(jac).numpy()
        np.testing.assert_allclose(
            balancing.get("cr_mogm", momentum=0.0).aggregate(jac), mgda, 1e-6
        )
        frozen = balancing.get("cr_mogm", momentum=1.0).aggregate(jac).numpy()
        np.testing.assert_allclose(frozen, jac.mean(axis=0), rtol=1e-5)
        tasks = balancing.get("cr_mogm", momentum=1.0, scale="tasks").aggregate(jac).numpy()
        np.testing.assert_allclose(tasks, jac.sum(axis=0), rtol=1e-5)
        with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\]"):
            balancing.get("cr_mogm", momentum=1.5)
