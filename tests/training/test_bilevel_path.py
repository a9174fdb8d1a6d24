"""The bilevel gradient path (Auto-Lambda) in the trainer: the meta step against an independent
computation of the hypergradient, the model step with the new weights, two replicas = one
device, and the non-finite-loss stop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training import MultiTaskModel, NonFiniteLossError, with_held_out
from mtl_keras.training.gradient_paths import BilevelPath
from tests.utils import micro_network, tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth")


def _model(balancer="auto_lambda", lr=0.1, **kwargs):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(
        micro_network(TASKS), list(tiny_specs(TASKS).values()), balancer, **kwargs
    )
    model.compile(optimizer=keras.optimizers.SGD(lr))
    return model


def _batch(n, nan_at=None):
    arrays = tiny_arrays(TASKS, n=n, size=16)
    labels = {t: arrays[t] for t in TASKS}
    if nan_at is not None:
        labels["depth"] = labels["depth"].astype(np.float32)
        labels["depth"][nan_at, 0, 0, 0] = np.nan
    return arrays["image"], labels


def _per_task_gradients(model, images, labels):
    """Each task's loss gradient of every trainable variable, and the losses (training mode)."""
    net = model.network
    with tf.GradientTape(persistent=True) as tape:
        labels = {t: tf.constant(v) for t, v in labels.items()}
        losses, _ = model.task_losses(labels, net(images, training=True))
        per_task = [losses[i] for i in range(len(TASKS))]
    grads = [tape.gradient(loss, net.trainable_variables) for loss in per_task]
    zero = [tf.zeros_like(v) for v in net.trainable_variables]
    grads = [[z if g is None else g for g, z in zip(gs, zero)] for gs in grads]
    return [[g.numpy() for g in gs] for gs in grads], losses.numpy()


def test_the_path_and_its_refusals():
    model = _model()
    assert type(model._path) is BilevelPath and model.gradient_source == "bilevel"
    with pytest.raises(ValueError, match="takes no gradient_source"):
        _model(gradient_source="shared")
    with pytest.raises(ValueError, match="even number of examples .* 2 \\* batch_size"):
        model.train_on_batch(*_batch(3))


@pytest.mark.parametrize(
    "held_out,virtual_lr",
    [("strided", 0.2), ("given", 0.2), ("strided", "optimizer")],
    ids=["held-out-chunk", "with_held_out", "virtual-lr-of-the-optimizer"],
)
def test_one_step_meta_step_and_model_step_against_an_independent_computation(held_out, virtual_lr):
    """Lambda moves by ``-lr * d lambda`` with ``d lambda_i = -alpha g_i . grad L(val; theta')``
    from per-task gradients on the training mini-batch (chunk 0: examples 0, 2, or the given
    training batch) and the held-out gradient at the virtual step (chunk 1, or the given held-out
    batch); the network then takes the SGD step of ``sum_i lambda'_i L_i`` on the training one.
    ``virtual_lr="optimizer"`` takes alpha from the optimizer's learning rate schedule.
    """
    meta_lr, lr = 0.5, 0.1
    if virtual_lr == "optimizer":
        alpha = 0.3  # the schedule's value at step 0; the optimizer's is 0.1 at step 1
        lr = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.3, 0.1])
    else:
        alpha = virtual_lr
    b = balancing.get("auto_lambda", optimizer="sgd", lr=meta_lr, virtual_lr=virtual_lr)
    model = _model(b, lr=lr)
    images, labels = _batch(4)
    if held_out == "given":  # two other sets of examples, interleaved by with_held_out
        train, val = _batch(2), _batch(2)
        val = (val[0][::-1].copy(), {t: v[::-1].copy() for t, v in val[1].items()})
        batched = with_held_out(
            tf.data.Dataset.from_tensors(train), tf.data.Dataset.from_tensors(val)
        )
        images, labels = next(iter(batched))
    else:
        train = (images[0::2], {t: v[0::2] for t, v in labels.items()})
        val = (images[1::2], {t: v[1::2] for t, v in labels.items()})
    lr = alpha if virtual_lr == "optimizer" else lr  # the model step's rate at step 0
    reference = _model("fixed")  # the same initial weights, computed on by hand
    net = reference.network
    theta = [v.numpy() for v in net.trainable_variables]
    lam = np.full(2, 0.1)
    g, train_losses = _per_task_gradients(reference, *train)
    for v, t, g0, g1 in zip(net.trainable_variables, theta, *g):
        v.assign(t - alpha * (lam[0] * g0 + lam[1] * g1))
    held_out, _ = _per_task_gradients(reference, *val)
    descent = [h0 + h1 for h0, h1 in zip(*held_out)]
    d_lam = np.array([-alpha * sum(np.sum(a * d) for a, d in zip(g[i], descent)) for i in range(2)])
    assert np.all(np.abs(d_lam) > 1e-8), d_lam

    logs = model.train_on_batch(images, labels, return_dict=True)
    new_lam = lam - meta_lr * d_lam
    np.testing.assert_allclose(model.balancer.meta_weights, new_lam, rtol=1e-3, atol=1e-7)
    for i, t in enumerate(TASKS):
        np.testing.assert_allclose(logs[f"{t}_loss"], train_losses[i], rtol=1e-5)
        np.testing.assert_allclose(logs[f"{t}_weight"], new_lam[i], rtol=1e-3)
    for v, t, g0, g1 in zip(model.network.trainable_variables, theta, *g):
        expected = t - lr * (new_lam[0] * g0 + new_lam[1] * g1)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=v.path)


def test_two_replicas_equal_one_device():
    strategy = two_replicas()
    images, labels = _batch(8)

    def trained(scope):
        with scope:
            model = _model(balancing.get("auto_lambda", lr=1e-2))
        data = tf.data.Dataset.from_tensors((images, labels))
        model.fit(data, epochs=2, verbose=0, shuffle=False)
        return model

    one, two = trained(tf.distribute.get_strategy().scope()), trained(strategy.scope())
    for a, b in zip(one.network.weights, two.network.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    for a, b in zip(one.balancer.weights, two.balancer.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
    assert not np.allclose(one.balancer.meta_weights, 0.1)


@pytest.mark.parametrize("nan_at", [0, 1], ids=["training", "held-out"])
def test_a_nan_label_stops_with_the_non_finite_loss_error_naming_the_task(nan_at):
    data = tf.data.Dataset.from_tensors(_batch(4, nan_at=nan_at))
    with pytest.raises(NonFiniteLossError, match=r"\['depth'\]"):
        _model().fit(data, epochs=1, verbose=0)


def test_with_held_out_refuses_batches_of_other_structure_or_smaller_size():
    images, labels = _batch(4)
    train = tf.data.Dataset.from_tensors((images, labels))
    other = tf.data.Dataset.from_tensors((images, {"depth": labels["depth"]}))
    with pytest.raises(ValueError, match="with_held_out: .* same structure"):
        with_held_out(train, other)
    small = tf.data.Dataset.from_tensors((images[:2], {t: v[:2] for t, v in labels.items()}))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="batch is smaller"):
        next(iter(with_held_out(train, small)))  # at trace time where the sizes are static
    last = tf.data.Dataset.from_tensors((images[:2], {t: v[:2] for t, v in labels.items()}))
    merged, _ = next(iter(with_held_out(last, train)))  # a smaller last training batch
    np.testing.assert_array_equal(merged[0::2], images[:2])
    np.testing.assert_array_equal(merged[1::2], images[:2])
