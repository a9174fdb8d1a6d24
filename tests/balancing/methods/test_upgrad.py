import numpy as np
import pytest
from scipy.optimize import minimize

from mtl_keras import balancing
from tests.balancing.properties import (
    GradientMethod,
    Homogeneous,
    NonConflicting,
    PermutationInvariant,
    rand,
)


def projection(jac, target):
    """The projection of ``target`` onto the dual cone {x : J x >= 0}, by a generic solver."""
    cons = {"type": "ineq", "fun": lambda x: jac @ x}
    return minimize(
        lambda x: np.sum((x - target) ** 2), target, constraints=cons,
        method="SLSQP", options={"ftol": 1e-15, "maxiter": 500},
    ).x  # fmt: skip


class TestUPGrad(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
    name = "upgrad"

    def equal_gradient_multiple(self, t, norm):
        return 1.0

    def test_orthogonal_and_conflicting_pairs(self):
        ortho = np.array([[2.0, 0.0], [0.0, 1.0]])
        np.testing.assert_allclose(balancing.get("upgrad").aggregate(ortho), [1.0, 0.5], atol=1e-6)
        conflict = np.array([[1.0, 0.0], [-1.0, 1.0]])
        # pi(g1) = (0.5, 0.5), pi(g2) = (0, 1): mean (0.25, 0.75)
        np.testing.assert_allclose(balancing.get("upgrad").aggregate(conflict), [0.25, 0.75], 1e-6)

    def test_projections_match_a_generic_qp(self):
        jac = rand(4, 5, seed=70)
        projections = [projection(jac, jac[i]) for i in range(4)]
        d = balancing.get("upgrad").aggregate(jac).numpy()
        np.testing.assert_allclose(d, np.mean(projections, 0), rtol=1e-3, atol=1e-4)

    def test_many_tasks_uses_the_iterative_solver(self):
        jac = rand(12, 20, seed=71)
        d = balancing.get("upgrad").aggregate(jac).numpy()
        assert np.all(jac @ d >= -1e-3 * np.linalg.norm(d) * np.linalg.norm(jac, axis=1))

    def test_preference_of_another_length_is_refused(self):
        with pytest.raises(ValueError, match="preference has 2 values for 3 tasks"):
            balancing.get("upgrad", preference=[0.5, 0.5]).aggregate(rand(3, 4, seed=0))
