import numpy as np
import pytest

from mtl_keras import balancing
from tests.balancing.properties import GradientMethod, Homogeneous, PermutationInvariant, rand


class TestIMTLG(GradientMethod, PermutationInvariant, Homogeneous):
    name = "imtl_g"

    def equal_gradient_multiple(self, t, norm):
        return 1.0

    @pytest.mark.parametrize("seed", [40, 41])
    def test_equal_projections_on_unit_gradients(self, seed):
        jac = rand(4, 10, seed=seed)
        d = balancing.get("imtl_g").aggregate(jac).numpy()
        proj = (jac / np.linalg.norm(jac, axis=1, keepdims=True)) @ d
        np.testing.assert_allclose(proj, proj[0], rtol=1e-4)
        # the paper's closed form: a_{2:T} = g_1 U^T (D U^T)^-1, a_1 = 1 - sum
        u = jac / np.linalg.norm(jac, axis=1, keepdims=True)
        dd, uu = jac[0] - jac[1:], u[0] - u[1:]
        a_rest = jac[0] @ uu.T @ np.linalg.inv(dd @ uu.T)
        a = np.concatenate([[1 - a_rest.sum()], a_rest])
        np.testing.assert_allclose(d, a @ jac, rtol=1e-4, atol=1e-6)
