"""`mtl_keras.training.optimizers.Adam`: Keras's Adam update for update, with a smaller graph."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import recipes
from mtl_keras.training import MultiTaskModel, building, optimizers
from tests.utils import micro_network, tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth")


def _schedule():
    return keras.optimizers.schedules.PolynomialDecay(1e-2, 10, end_learning_rate=0.0, power=0.9)


def _trained(cls, strategy, **kwargs):
    arrays = tiny_arrays(TASKS, n=8, size=16)
    data = tf.data.Dataset.from_tensor_slices(
        (arrays["image"], {t: arrays[t] for t in TASKS})
    ).batch(4)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = MultiTaskModel(micro_network(TASKS), list(tiny_specs(TASKS).values()))
        model.compile(optimizer=cls(_schedule(), weight_decay=1e-2, **kwargs))
    model.fit(data, epochs=1, verbose=0)  # two steps
    return [v.numpy() for v in [*model.network.weights, *model.optimizer.variables]]


@pytest.mark.parametrize("kwargs", [{}, {"amsgrad": True}])
def test_same_updates_as_keras_adam_bit_for_bit_on_one_device_and_two_replicas(kwargs):
    strategies = [tf.distribute.get_strategy()]
    # tests/conftest.py makes two logical CPUs; amsgrad's branch is the same on replicas
    if len(tf.config.list_logical_devices("CPU")) >= 2 and not kwargs:
        strategies.append(two_replicas())
    for strategy in strategies:
        ours = _trained(optimizers.Adam, strategy, **kwargs)
        theirs = _trained(keras.optimizers.Adam, strategy, **kwargs)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def _apply_ops(cls, variables):
    optimizer = cls(_schedule(), weight_decay=1e-2)
    optimizer.build(variables)
    apply = tf.function(lambda grads: optimizer.apply(grads, variables))
    specs = [tf.TensorSpec(v.shape, v.dtype) for v in variables]
    return len(apply.get_concrete_function(specs).graph.get_operations())


def test_the_constants_are_built_once_per_step():
    """Keras's graph grows by about 58 ops per variable, this one's by half that or less: the
    step size, the schedule and the weight decay's casts do not repeat per variable."""
    small, large = (
        micro_network(TASKS).trainable_variables,
        micro_network(("semseg", "depth", "normals", "edges")).trainable_variables,
    )
    added = len(large) - len(small)
    per_variable = {
        cls: (_apply_ops(cls, large) - _apply_ops(cls, small)) / added
        for cls in (keras.optimizers.Adam, optimizers.Adam)
    }
    assert per_variable[optimizers.Adam] <= 0.55 * per_variable[keras.optimizers.Adam]


def test_saves_as_itself_and_recipes_use_it():
    optimizer = optimizers.Adam(1e-3, weight_decay=1e-4, global_clipnorm=2.0)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(again) is optimizers.Adam and again.get_config() == optimizer.get_config()
    assert type(building.make_optimizer(recipes.get("demo"), 10)) is optimizers.Adam
