"""Gradient clipping clips the global batch's gradient: the same step on two replicas as on one
device, where Keras alone would clip each replica's share."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import recipes
from mtl_keras.training import MultiTaskModel, building, clipping
from tests.utils import micro_network, tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth")


def _data():
    arrays = tiny_arrays(TASKS, n=4, size=16)
    return tf.data.Dataset.from_tensor_slices(
        (arrays["image"], {t: arrays[t] for t in TASKS})
    ).batch(4)


def _step(strategy, clip, balancer="fixed"):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = MultiTaskModel(micro_network(TASKS), list(tiny_specs(TASKS).values()), balancer)
        model.compile(optimizer=keras.optimizers.SGD(0.1, **clip))
    before = [v.numpy() for v in model.network.trainable_variables]
    model.fit(_data(), epochs=1, verbose=0)
    return before, [v.numpy() for v in model.network.trainable_variables]


@pytest.mark.parametrize(
    "clip, balancer",
    [({"global_clipnorm": 0.05}, "mgda")],  # a gradient-level path; clipvalue: the same hand-off
)
def test_two_replicas_clip_like_one_device(clip, balancer):
    if len(tf.config.list_logical_devices("CPU")) < 2:  # tests/conftest.py makes two
        pytest.skip("needs two logical CPUs")
    start, one = _step(tf.distribute.get_strategy(), clip, balancer)
    _, two = _step(two_replicas(), clip, balancer)
    moved = [b - a for a, b in zip(start, one)]
    # the clip is active (SGD, lr 0.1): the update's global norm is 0.1 x the clip norm
    norm = np.sqrt(sum(float(np.sum(m.astype(np.float64) ** 2)) for m in moved))
    assert norm == pytest.approx(0.1 * clip["global_clipnorm"], rel=1e-3)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_one_device_is_keras_own_clipping():
    """With one replica the optimizer clips as Keras does: the step is the manual one."""
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(micro_network(TASKS), list(tiny_specs(TASKS).values()))
    model.compile(optimizer=keras.optimizers.SGD(0.1, global_clipnorm=0.05))
    start = [v.numpy() for v in model.network.trainable_variables]
    images, labels = next(iter(_data()))
    with tf.GradientTape() as tape:
        out = model.network(images, training=True)
        loss = sum(model._objective.task_losses(labels, out)[0])
    grads = tape.gradient(loss, model.network.trainable_variables)
    clipped, _ = tf.clip_by_global_norm(grads, 0.05)
    model.fit(_data(), epochs=1, verbose=0)
    for a, g, b in zip(start, clipped, model.network.trainable_variables):
        np.testing.assert_allclose(a - 0.1 * g.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    assert clipping.clips(model.optimizer) and model.optimizer.global_clipnorm == 0.05


def test_recipe_clip_norm_reaches_the_optimizer():
    recipe = recipes.get("mlore_nyud")
    assert recipe.clip_norm == 10.0
    optimizer = building.make_optimizer(recipe, 100)
    assert optimizer.global_clipnorm == 10.0
    assert building.make_optimizer(recipes.get("demo"), 100).global_clipnorm is None
    with pytest.raises(ValueError, match="clip_norm must be null"):
        recipe.with_overrides(["clip_norm=-1"])
