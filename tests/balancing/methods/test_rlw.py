import numpy as np
import tensorflow as tf

from tests.balancing.methods._loss import set_up
from tests.balancing.properties import Method


class TestRandomLossWeighting(Method):
    name = "rlw"

    def test_is_seeded_stateless_and_sums_to_one(self):
        b = set_up("rlw", tasks=("a", "b", "c"), seed=7)
        w5 = b.combine(tf.ones(3), None, tf.constant(5, tf.int64))[1].numpy()
        again = set_up("rlw", tasks=("a", "b", "c"), seed=7).combine(tf.ones(3), None, 5)[1]
        np.testing.assert_array_equal(w5, again.numpy())
        expected = tf.nn.softmax(tf.random.stateless_normal([3], seed=[7, 5])).numpy()
        np.testing.assert_allclose(w5, expected, rtol=1e-6)
        assert not np.allclose(w5, b.combine(tf.ones(3), None, 6)[1])
        uniform = set_up(
            "rlw", tasks=("a", "b", "c"), seed=7, distribution="uniform", scale="tasks"
        )
        np.testing.assert_allclose(np.sum(uniform.combine(tf.ones(3), None, 5)[1]), 3.0, 1e-6)
