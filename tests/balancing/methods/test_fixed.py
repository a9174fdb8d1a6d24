import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import Method


class TestFixedWeights(Method):
    name = "fixed"

    def test_uniform_mapping_and_sequence(self):
        b = balancing.get("fixed")
        b.setup(["a", "b", "c"])
        total, w = b.combine(tf.constant([1.0, 2.0, 3.0]), None, 0)
        assert float(total) == 6.0 and w.numpy().tolist() == [1.0, 1.0, 1.0]
        b = balancing.get("fixed", weights={"b": 3.0})
        b.setup(["a", "b"])
        assert float(b.combine(tf.constant([1.0, 2.0]), None, 0)[0]) == 7.0
        with pytest.raises(ValueError, match="unknown tasks"):
            balancing.get("fixed", weights={"z": 1.0}).setup(["a"])
        with pytest.raises(ValueError, match="2 values for 3 tasks"):
            balancing.get("fixed", weights=[1.0, 2.0]).setup(["a", "b", "c"])
