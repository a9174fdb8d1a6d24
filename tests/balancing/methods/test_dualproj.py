import numpy as np

from mtl_keras import balancing
from tests.balancing.methods.test_upgrad import projection
from tests.balancing.properties import (
    GradientMethod,
    Homogeneous,
    NonConflicting,
    PermutationInvariant,
    rand,
)


class TestDualProj(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
    name = "dualproj"

    def equal_gradient_multiple(self, t, norm):
        return 1.0

    def test_projects_a_conflicting_mean(self):
        jac = np.array([[1.0, 0.0], [-2.0, 1.0]])  # mean (-0.5, 0.5) conflicts with g1
        np.testing.assert_allclose(balancing.get("dualproj").aggregate(jac), [0.0, 0.5], atol=1e-6)

    def test_projection_matches_a_generic_qp(self):
        jac = rand(4, 5, seed=70)
        np.testing.assert_allclose(
            balancing.get("dualproj").aggregate(jac), projection(jac, jac.mean(0)), 1e-3, 1e-4
        )
