import numpy as np

from mtl_keras import balancing
from tests.balancing.properties import (
    GradientMethod,
    Homogeneous,
    NonConflicting,
    PermutationInvariant,
    rand,
)


class TestConFIG(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
    name = "config"

    def equal_gradient_multiple(self, t, norm):
        return t

    def test_equal_cosines_and_length(self):
        jac = rand(3, 8, seed=80)
        d = balancing.get("config").aggregate(jac).numpy()
        cos = jac @ d / (np.linalg.norm(jac, axis=1) * np.linalg.norm(d))
        np.testing.assert_allclose(cos, cos[0], rtol=1e-4)
        assert cos[0] > 0
        unit = d / np.linalg.norm(d)
        np.testing.assert_allclose(np.linalg.norm(d), np.sum(jac @ unit), rtol=1e-4)

    def test_same_direction_as_imtl_g(self):
        jac = rand(4, 9, seed=81)
        a = balancing.get("config").aggregate(jac).numpy()
        b = balancing.get("imtl_g").aggregate(jac).numpy()
        np.testing.assert_allclose(a / np.linalg.norm(a), b / np.linalg.norm(b), atol=1e-4)
