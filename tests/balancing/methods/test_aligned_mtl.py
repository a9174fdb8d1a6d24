import numpy as np
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import STEP, GradientMethod, Homogeneous, PermutationInvariant, rand


class TestAlignedMTL(GradientMethod, PermutationInvariant, Homogeneous):
    name = "aligned_mtl"

    def equal_gradient_multiple(self, t, norm):
        return t

    def test_equalises_the_principal_components(self):
        jac = rand(3, 7, seed=60)
        g = jac @ jac.T
        cols = []
        for k in range(3):
            b = balancing.get("aligned_mtl", preference=np.eye(3)[k].tolist())
            b.setup(["a", "b", "c"])
            cols.append(b.weights_from_gramian(tf.constant(g, tf.float32), None, STEP).numpy())
        bmat = np.stack(cols, 1)
        lam_min = np.linalg.eigvalsh(g)[0]
        np.testing.assert_allclose(bmat @ g @ bmat, lam_min * np.eye(3), atol=1e-4 * lam_min)
        d = balancing.get("aligned_mtl").aggregate(jac).numpy()
        np.testing.assert_allclose(d, bmat.sum(1) @ jac, rtol=1e-4)

    def test_scale_modes_and_rank_deficiency(self):
        jac = np.diag([1.0, 2.0, 4.0])
        for mode, level in (("min", 1.0), ("median", 2.0), ("rmse", np.sqrt(7.0))):
            d = balancing.get("aligned_mtl", scale_mode=mode).aggregate(jac).numpy()
            np.testing.assert_allclose(d, [level] * 3, rtol=1e-5)
        # duplicated task: eigenvalues 2, 16 kept, 0 dropped; aligned rows e1, e1, sqrt(2) e3
        dup = np.stack([jac[0], jac[0], jac[2]])
        d = balancing.get("aligned_mtl").aggregate(dup).numpy()
        np.testing.assert_allclose(d, [2.0, 0.0, np.sqrt(2.0)], rtol=1e-5)
