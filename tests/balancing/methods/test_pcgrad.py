import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.balancing._linalg import partner_orders, step_seed
from tests.balancing.properties import GradientMethod, Homogeneous, jacobian, rand


def orders_for(seed, step, t):
    return partner_orders(t, step_seed(seed, step)).numpy()


def pcgrad_reference(jac, orders):
    """Algorithm 1 of Yu et al. on the vectors."""
    out = []
    for i in range(len(jac)):
        g = jac[i].copy()
        for j in orders[i]:
            dot = g @ jac[j]
            if dot < 0:
                g -= dot / (jac[j] @ jac[j]) * jac[j]
        out.append(g)
    return np.sum(out, axis=0)


class TestPCGrad(GradientMethod, Homogeneous):
    name = "pcgrad"

    def equal_gradient_multiple(self, t, norm):
        return t

    def test_two_tasks_never_conflict(self):
        for seed in range(5):
            jac = jacobian(2, 5, seed=seed)
            d = self.run(jac).numpy()
            assert np.all(jac @ d >= -1e-5), jac @ d

    def test_one_conflicting_pair(self):
        g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
        d = balancing.get("pcgrad", seed=0).aggregate(np.stack([g1, g2]).astype(np.float32))
        np.testing.assert_allclose(d, (g1 + 0.5 * g2) + (g2 + g1), atol=1e-6)

    @pytest.mark.parametrize("step", [0, 1, 2])
    def test_gramian_weights_equal_vector_projections(self, step):
        jac = rand(5, 20, seed=step)
        jac[1] = -jac[0] + 0.3 * jac[1]
        d = balancing.get("pcgrad", seed=11).aggregate(jac, step=tf.constant(step, tf.int64))
        ref = pcgrad_reference(jac, orders_for(11, step, 5))
        np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-5)
        mean = balancing.get("pcgrad", seed=11, reduction="mean")
        np.testing.assert_allclose(
            mean.aggregate(jac, step=tf.constant(step, tf.int64)), ref / 5, 1e-4
        )

    def test_partner_orders_are_permutations_of_the_other_tasks(self):
        orders = orders_for(1, 7, 6)
        for i, row in enumerate(orders):
            assert sorted(row.tolist()) == [j for j in range(6) if j != i]
