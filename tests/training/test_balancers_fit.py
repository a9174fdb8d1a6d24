"""Every balancer inside the trainer: two fit steps, state saved and restored, and one step on
two replicas equal to one step on one device with the same global batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training import MultiTaskModel
from tests.utils import micro_network, tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth", "normals")


def _kwargs(name):
    return {"seed": 3} if balancing.BALANCERS[name].stochastic else {}


def _model(name, source="auto"):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(
        micro_network(TASKS),
        list(tiny_specs(TASKS).values()),
        name,
        balancer_kwargs=_kwargs(name),
        gradient_source=source,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


def _data(name, n=4, batch=4):
    """``n // batch`` steps of ``batch`` examples per mini-batch: a step of a multi-batch method
    takes the ``needs.batches`` mini-batches it declares."""
    k = balancing.get(name, **_kwargs(name)).needs.batches
    arrays = tiny_arrays(TASKS, n=n * k, size=16)
    return tf.data.Dataset.from_tensor_slices(
        (arrays["image"], {t: arrays[t] for t in TASKS})
    ).batch(batch * k)


@pytest.fixture(scope="module")
def mirrored():
    return two_replicas()


@pytest.mark.parametrize("name", balancing.available())
def test_two_replicas_equal_one_device_then_a_second_step_and_a_state_round_trip(
    name, mirrored, tmp_path
):
    def step(strategy):
        with strategy.scope():
            model = _model(name)
        model.fit(_data(name), epochs=1, verbose=0)
        return model

    one = step(tf.distribute.get_strategy())
    if len(tf.config.list_logical_devices("CPU")) >= 2:  # tests/conftest.py makes two
        two = step(mirrored)
        for a, b in zip(one.network.trainable_variables, two.network.trainable_variables):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
        for a, b in zip(one.balancer.weights, two.balancer.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)

    hist = one.fit(_data(name), epochs=1, verbose=0)  # a second step, from the first's state
    logs = {k: v[-1] for k, v in hist.history.items()}
    assert all(np.isfinite(logs[f"{t}_loss"]) and np.isfinite(logs[f"{t}_weight"]) for t in TASKS)
    path = str(tmp_path / "m.weights.h5")
    one.save_weights(path)
    fresh = _model(name)
    fresh.load_weights(path)
    for a, b in zip(one.balancer.weights, fresh.balancer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(one.network.weights, fresh.network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
