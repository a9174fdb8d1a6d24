import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.methods.test_pcgrad import orders_for, pcgrad_reference
from tests.balancing.properties import STEP, GradientMethod, Homogeneous, gram, rand


def gradvac_reference(jac, targets, orders, beta):
    """The paper's update rule on the vectors (one group); returns (update, new targets)."""
    targets = targets.copy()
    out = []
    for i in range(len(jac)):
        g = jac[i].copy()
        for j in orders[i]:
            cos = g @ jac[j] / (np.linalg.norm(g) * np.linalg.norm(jac[j]))
            goal = targets[i, j]
            if cos < goal:
                g += (
                    jac[j]
                    * np.linalg.norm(g)
                    * (goal * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - goal**2))
                    / (np.linalg.norm(jac[j]) * np.sqrt(1 - goal**2))
                )
            targets[i, j] = (1 - beta) * goal + beta * cos
        out.append(g)
    return np.sum(out, axis=0), targets


class TestGradVac(GradientMethod, Homogeneous):
    name = "gradvac"
    variants = ({"group": "variable"},)

    def equal_gradient_multiple(self, t, norm):
        return t

    def test_two_steps_match_the_vector_rule_and_first_step_is_pcgrad(self):
        jac0, jac1 = rand(4, 15, seed=20), rand(4, 15, seed=21)
        b = balancing.get("gradvac", seed=5, beta=0.5)
        d0 = b.aggregate(jac0, step=tf.constant(0, tf.int64)).numpy()
        np.testing.assert_allclose(d0, pcgrad_reference(jac0, orders_for(5, 0, 4)), rtol=1e-4)
        ref0, targets = gradvac_reference(jac0, np.zeros((4, 4)), orders_for(5, 0, 4), 0.5)
        np.testing.assert_allclose(b.targets.numpy()[0], targets, atol=1e-6)
        d1 = b.aggregate(jac1, step=tf.constant(1, tf.int64)).numpy()
        ref1, targets = gradvac_reference(jac1, targets, orders_for(5, 1, 4), 0.5)
        np.testing.assert_allclose(d1, ref1, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.targets.numpy()[0], targets, atol=1e-6)

    def test_raises_cosine_to_target(self):
        # one correction of g1 towards g2 lands exactly on the target cosine
        jac = np.array([[1.0, 0.0], [0.0, 1.0]])
        b = balancing.get("gradvac", seed=0)
        b.setup(["a", "b"])
        b.targets.assign(np.full((1, 2, 2), 0.5, np.float32))
        w = b.weights_from_gramian(gram(jac), tf.ones(2), STEP).numpy()
        # g1' = g1 + w_12 g2 with cos(g1', g2) = 0.5 -> w_12 = tan(30 deg); same for g2'
        np.testing.assert_allclose(w, [1 + np.tan(np.pi / 6)] * 2, rtol=1e-5)
        np.testing.assert_allclose(b.targets.numpy()[0], [[0.5, 0.25], [0.25, 0.5]], atol=1e-6)

    def test_per_variable_groups(self):
        jac = rand(3, 10, seed=22)
        b = balancing.get("gradvac", group="variable", seed=2)
        b.setup(["a", "b", "c"])
        b.build_parameter_state([4, 6])
        assert not b.gramian_based and b.sources == ("shared",)
        d = b.aggregate(jac).numpy()
        orders = orders_for(2, 0, 3)
        ref = np.concatenate(
            [
                gradvac_reference(jac[:, s], np.zeros((3, 3)), orders, 0.5)[0]
                for s in (slice(0, 4), slice(4, 10))
            ]
        )
        np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="laid out for 10 parameters"):
            b.aggregate(rand(3, 9, seed=0))
