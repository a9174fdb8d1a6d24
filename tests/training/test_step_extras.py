"""Gradient statistics in the step logs, auxiliary-only tasks and the network's own losses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.architectures import ImageNormalization, SharedRepresentation, sharing_of
from mtl_keras.training import LabelError, MultiTaskModel
from tests.utils import micro_network, tiny_arrays, tiny_specs

TASKS = ("semseg", "depth", "normals")
LR = 0.1


def _batch(tasks, n=2, size=16):
    arrays = tiny_arrays(tasks, n=n, size=size)
    return tf.constant(arrays["image"]), {t: tf.constant(arrays[t]) for t in tasks}


def _fit_one_step(model, x, y):
    ds = tf.data.Dataset.from_tensors((x, y))
    hist = model.fit(ds, epochs=1, verbose=0)
    return {k: v[-1] for k, v in hist.history.items()}


def _task_gradient_rows(model, x, y, source):
    """Per-task gradients (T, P) at the current weights, of the shared variables or of the
    representation."""
    net = model.network
    rep_layer = sharing_of(net).representation_layers[0]
    probe = keras.Model(net.input, {"out": net.output, "rep": rep_layer.output})
    shared = sharing_of(net).shared_variables
    rows = []
    for i in range(len(model.task_names)):
        with tf.GradientTape() as tape:
            out = probe(x, training=True)
            losses, _ = model.task_losses(y, out["out"])
            target = losses[i]
        wrt = [out["rep"]] if source == "representation" else shared
        grads = tape.gradient(target, wrt)
        rows.append(tf.concat([tf.reshape(g, [-1]) for g in grads], 0))
    return tf.stack(rows)


@pytest.mark.parametrize(
    "balancer,source,stats",
    [
        ("mgda", "shared", None),
        ("pcgrad", "shared", None),
        ("mgda", "representation", None),
        ("graddrop", "representation", None),
        ("fixed", "auto", True),
    ],
)
def test_logged_statistics_are_those_of_the_task_gradients(balancer, source, stats):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(
        micro_network(TASKS),
        list(tiny_specs(TASKS).values()),
        balancer,
        balancer_kwargs={"seed": 0} if balancer in ("pcgrad", "graddrop") else None,
        gradient_source=source,
        gradient_statistics=stats,
    )
    model.compile(optimizer=keras.optimizers.SGD(LR))
    x, y = _batch(TASKS)
    expected_source = "shared" if source == "shared" else "representation"
    jac = _task_gradient_rows(model, x, y, expected_source)
    expected = balancing.gramian_statistics(tf.matmul(jac, jac, transpose_b=True))
    logs = _fit_one_step(model, x, y)
    for i, t in enumerate(TASKS):
        np.testing.assert_allclose(logs[f"grad_norm_{t}"], expected["norms"][i], rtol=1e-4)
        for j in range(i + 1, len(TASKS)):
            np.testing.assert_allclose(
                logs[f"grad_cos_{t}_{TASKS[j]}"], expected["cosine"][i, j], rtol=1e-4, atol=1e-6
            )
    assert logs["grad_conflicts"] == int(expected["conflicts"])


def test_loss_level_methods_log_no_statistics_by_default():
    model = MultiTaskModel(micro_network(TASKS), list(tiny_specs(TASKS).values()), "uncertainty")
    model.compile(optimizer=keras.optimizers.SGD(LR))
    logs = _fit_one_step(model, *_batch(TASKS))
    assert not [k for k in logs if k.startswith("grad_")]


def _network_with_auxiliary(size=16, regularizer=None):
    """semseg and depth, plus a deep-supervision output ``normals/aux`` at half resolution."""
    specs = tiny_specs(("semseg", "depth", "normals"))
    image = keras.Input((size, size, 3), name="image")
    x = ImageNormalization()(image)
    x = keras.layers.Conv2D(
        8, 3, padding="same", activation="relu", name="enc", kernel_regularizer=regularizer
    )(x)
    z = SharedRepresentation(name="shared")(x)
    outputs = {
        t: keras.layers.Conv2D(
            specs[t].channels, 3, padding="same", name=t, kernel_regularizer=regularizer
        )(z)
        for t in ("semseg", "depth")
    }
    half = keras.layers.AveragePooling2D(2, name="pool")(z)
    outputs["normals/aux"] = keras.layers.Conv2D(3, 1, name="normals_aux")(half)
    return keras.Model(image, outputs, name="aux_net")


def test_auxiliary_tasks_must_be_declared_and_labelled():
    specs = tiny_specs(("semseg", "depth"))
    with pytest.raises(ValueError, match=r"auxiliary_tasks"):
        MultiTaskModel(_network_with_auxiliary(), list(specs.values()))
    with pytest.raises(ValueError, match=r"no deep-supervision output"):
        MultiTaskModel(
            micro_network(("semseg", "depth")), list(specs.values()), auxiliary_tasks=["edges"]
        )
    with pytest.raises(ValueError, match=r"also main tasks"):
        MultiTaskModel(
            _network_with_auxiliary(), list(specs.values()), auxiliary_tasks=["semseg", "normals"]
        )
    model = MultiTaskModel(
        _network_with_auxiliary(),
        list(specs.values()),
        auxiliary_tasks=list(tiny_specs(("normals",)).values()),
    )
    x, y = _batch(("semseg", "depth"))
    with pytest.raises(LabelError, match=r"normals"):
        model.task_losses(y, model.network(x))


@pytest.mark.parametrize(
    "balancer,source", [("fixed", "auto"), ("mgda", "shared"), ("mgda", "representation")]
)
def test_auxiliary_task_and_regulariser_gradients_reach_the_update(balancer, source):
    """One SGD step: the auxiliary head moves by ``-lr * w_aux * dL_aux/dW`` (a loss the
    balancer does not weigh), the regularised heads also by ``-lr * dR/dW``, and the encoder by
    ``-lr * (sum_i w_i dL_i/dW + w_aux dL_aux/dW + dR/dW)`` with the logged task weights."""
    keras.utils.set_random_seed(0)
    weight = 3.0
    net = _network_with_auxiliary(regularizer=keras.regularizers.L2(0.5))
    model = MultiTaskModel(
        net,
        list(tiny_specs(("semseg", "depth")).values()),
        balancer,
        auxiliary_tasks=list(tiny_specs(("normals",)).values()),
        auxiliary_weights={"normals": weight},
        gradient_source=source,
    )
    model.compile(optimizer=keras.optimizers.SGD(LR))
    x, y = _batch(("semseg", "depth", "normals"))
    aux_kernel = net.get_layer("normals_aux").kernel
    head_kernel = net.get_layer("depth").kernel
    enc_kernel = net.get_layer("enc").kernel
    with tf.GradientTape(persistent=True) as tape:
        out = net(x, training=True)
        _, terms = model.task_losses(y, out)
        reg = tf.add_n(net.losses)
    aux_grad = tape.gradient(terms["normals/aux"], aux_kernel)
    reg_grad = tape.gradient(reg, head_kernel)
    depth_grad = tape.gradient(terms["depth"], head_kernel)
    enc_grads = {k: tape.gradient(terms[k], enc_kernel) for k in ("semseg", "depth", "normals/aux")}
    enc_reg = tape.gradient(reg, enc_kernel)
    aux_before, head_before, enc_before = (
        aux_kernel.numpy(),
        head_kernel.numpy(),
        enc_kernel.numpy(),
    )
    logs = _fit_one_step(model, x, y)
    assert "normals/aux_loss" in logs
    enc_expected = (
        logs["semseg_weight"] * enc_grads["semseg"]
        + logs["depth_weight"] * enc_grads["depth"]
        + weight * enc_grads["normals/aux"]
        + enc_reg
    )
    np.testing.assert_allclose(
        enc_kernel.numpy() - enc_before, -LR * enc_expected.numpy(), rtol=2e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        aux_kernel.numpy() - aux_before, -LR * weight * aux_grad.numpy(), rtol=1e-4, atol=1e-7
    )
    # heads receive sum_i g_i under both balancers (fixed weights are 1; head_weighting="sum")
    np.testing.assert_allclose(
        head_kernel.numpy() - head_before,
        -LR * (depth_grad.numpy() + reg_grad.numpy()),
        rtol=1e-4,
        atol=1e-7,
    )
