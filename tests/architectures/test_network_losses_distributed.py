"""A network's own losses (``add_loss``) under ``MirroredStrategy``: each replica sees its own,
and a loss of a batch statistic is the global batch's, so two replicas take one device's step.

Sluice networks' subspace orthogonality penalty (Ruder et al., AAAI 2019) squares the Gram
matrices of the columns' subspaces over the batch. Before, a replica read every replica's
``add_loss`` values from Keras's layer lists (the logged loss doubled), and each replica's
penalty was its half batch's (the weights left one device's by 0.57 in two steps).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import architectures
from mtl_keras.training.model import MultiTaskModel
from tests.architectures.tiny import TINY
from tests.utils import tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth")


def _fit(strategy, steps=1):
    arrays = tiny_arrays(TASKS, n=4)
    data = tf.data.Dataset.from_tensor_slices((arrays["image"], {t: arrays[t] for t in TASKS}))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        specs = list(tiny_specs(TASKS).values())
        network = architectures.build("sluice", specs, orthogonality=0.1, **TINY)
        model = MultiTaskModel(network, specs, "fixed")
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    history = model.fit(data.batch(4), epochs=steps, verbose=0, shuffle=False)
    return [v.numpy() for v in model.network.trainable_variables], history.history


def test_sluice_orthogonality_on_two_replicas_equals_one_device():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py)")
    single, single_logs = _fit(tf.distribute.get_strategy())
    mirrored, mirrored_logs = _fit(two_replicas())
    task_losses = single_logs["semseg_loss"][0] + single_logs["depth_loss"][0]
    assert single_logs["loss"][0] > task_losses + 1.0  # the penalty is a large part of the loss
    assert mirrored_logs["loss"][0] == pytest.approx(single_logs["loss"][0], rel=1e-5)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
