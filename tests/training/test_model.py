import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.architectures import sharing_of
from mtl_keras.training import (
    AtomicCheckpoint,
    LabelError,
    MultiTaskModel,
    NonFiniteLossError,
    NonFiniteLossGuard,
)
from tests.utils import ALL_TASKS, tiny_arrays, tiny_dataset, tiny_network, tiny_specs, two_replicas


def _model(tasks=ALL_TASKS, balancer="fixed", **kwargs):
    keras.utils.set_random_seed(0)
    net = tiny_network(tasks)
    model = MultiTaskModel(net, list(tiny_specs(tasks).values()), balancer, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def test_sharing_is_read_from_the_graph():
    net = tiny_network(("semseg", "depth"))
    sharing = sharing_of(net)
    assert len(sharing.representation_layers) == 1
    shared = {id(v) for v in sharing.shared_variables}
    backbone = next(layer for layer in net.layers if isinstance(layer, keras.Model))
    assert shared == {id(v) for v in backbone.trainable_variables}
    heads = [v for v in net.trainable_variables if id(v) not in shared]
    assert {id(v) for v in heads} == {id(v) for v in sharing.task_variables}


@pytest.mark.parametrize(
    "balancer,source",
    [("fixed", "auto"), ("mgda", "representation"), ("mgda", "shared")],
)
def test_two_fit_steps_train_every_task(balancer, source):
    tasks = ALL_TASKS if balancer == "fixed" else ("semseg", "depth", "normals")
    model = _model(tasks, balancer=balancer, gradient_source=source)
    before = [v.numpy().copy() for v in model.network.trainable_variables]
    hist = model.fit(tiny_dataset(tasks), epochs=1, verbose=0)
    logs = {k: v[-1] for k, v in hist.history.items()}
    for t in tasks:
        assert np.isfinite(logs[f"{t}_loss"]) and f"{t}_weight" in logs
    assert "learning_rate" in logs
    after = model.network.trainable_variables
    assert all(not np.allclose(b, a.numpy()) for b, a in zip(before, after) if b.ndim == 4)
    if balancer == "mgda":
        assert sum(logs[f"{t}_weight"] for t in tasks) == pytest.approx(1.0, abs=1e-4)


def test_evaluate_reports_task_metrics():
    model = _model(("semseg", "depth", "normals"))
    logs = model.evaluate(tiny_dataset(("semseg", "depth", "normals")), return_dict=True, verbose=0)
    for key in ("semseg_miou", "depth_rmse", "normals_mean", "semseg_loss", "loss"):
        assert key in logs and np.isfinite(logs[key])


def test_missing_label_names_the_task():
    model = _model(("semseg", "depth"))
    arrays = tiny_arrays(("semseg", "depth"), n=2)
    with pytest.raises(LabelError, match=r"\['depth'\] missing"):
        model.train_on_batch(arrays["image"], {"semseg": arrays["semseg"]})


def test_label_shape_mismatch_names_task_and_shapes():
    model = _model(("semseg", "depth"))
    arrays = tiny_arrays(("semseg", "depth"), n=2)
    bad = {"semseg": arrays["semseg"], "depth": arrays["depth"][:, :16, :16]}
    with pytest.raises(
        LabelError, match=r"task 'depth' has shape \(2, 16, 16, 1\).*\(2, 32, 32, 1\)"
    ):
        model.train_on_batch(arrays["image"], bad)


def test_unknown_balancer_and_impossible_source():
    net = tiny_network(("semseg", "depth"))
    with pytest.raises(ValueError, match="valid balancers"):
        MultiTaskModel(net, balancer="nash")
    with pytest.raises(ValueError, match="unknown gradient_source 'bogus'; valid: auto"):
        MultiTaskModel(net, balancer="fixed", gradient_source="bogus")
    image = keras.Input((8, 8, 3))
    trunk = keras.layers.Conv2D(4, 3, padding="same")(image)
    plain = keras.Model(
        image,
        {"depth": keras.layers.Conv2D(1, 1)(trunk), "normals": keras.layers.Conv2D(3, 1)(trunk)},
    )
    with pytest.raises(ValueError, match="not possible here.*declares no SharedRepresentation"):
        MultiTaskModel(plain, balancer="mgda", gradient_source="representation")
    assert MultiTaskModel(plain, balancer="mgda").gradient_source == "shared"


def test_deep_supervision_outputs_are_supervised():
    specs = tiny_specs(("semseg", "depth"))
    net = tiny_network(("semseg", "depth"))
    aux = keras.layers.Conv2D(1, 1, name="depth_aux")(net.get_layer("shared_P5").output)
    net2 = keras.Model(net.input, {**net.output, "depth/aux": aux})
    model = MultiTaskModel(net2, list(specs.values()))
    model.compile(optimizer="sgd")
    arrays = tiny_arrays(("semseg", "depth"), n=2)
    labels = {t: arrays[t] for t in ("semseg", "depth")}
    logs = model.train_on_batch(arrays["image"], labels, return_dict=True)
    assert logs["depth/aux_loss"] > 0
    main = model.network(arrays["image"])
    depth_main = float(specs["depth"].loss(labels["depth"], main["depth"]))
    assert logs["depth_loss"] > depth_main  # task loss includes its deep supervision


def test_nan_loss_stops_training_and_keeps_checkpoint(tmp_path):
    model = _model(("semseg", "depth"))
    arrays = tiny_arrays(("semseg", "depth"), n=4)
    ckpt = AtomicCheckpoint(str(tmp_path))
    good = tf.data.Dataset.from_tensor_slices(
        (arrays["image"], {"semseg": arrays["semseg"], "depth": arrays["depth"]})
    ).batch(2)
    model.fit(good, epochs=1, verbose=0, callbacks=[ckpt])
    saved = os.path.getmtime(ckpt.path)
    depth = arrays["depth"].copy()
    depth[0, 0, 0, 0] = np.nan
    bad = tf.data.Dataset.from_tensor_slices(
        (arrays["image"], {"semseg": arrays["semseg"], "depth": depth})
    ).batch(2)
    with pytest.raises(NonFiniteLossError, match=r"\['depth'\].*last good checkpoint is kept"):
        model.fit(
            bad,
            epochs=1,
            verbose=0,
            callbacks=[NonFiniteLossGuard(["semseg", "depth"], ckpt.path), ckpt],
        )
    assert os.path.getmtime(ckpt.path) == saved
    fresh = _model(("semseg", "depth"))
    fresh.load_weights(ckpt.path)  # the kept checkpoint is complete and loadable
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


@pytest.fixture(scope="module")
def mirrored():
    return two_replicas()


@pytest.mark.parametrize("balancer,source", [("mgda", "representation")])
def test_mirrored_step_equals_single_device(balancer, source, mirrored):
    """One fit step on 2 replicas gives the weights of 1 device on the same global batch, with
    the representation split of a real backbone (every balancer in its default source, on a
    smaller network: tests/training/test_balancers_fit.py)."""
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py)")
    tasks = ("semseg", "depth")
    arrays = tiny_arrays(tasks, n=4)
    ds = tf.data.Dataset.from_tensor_slices((arrays["image"], {t: arrays[t] for t in tasks})).batch(
        4
    )

    def one_step(strategy):
        with strategy.scope():
            model = _model(tasks, balancer=balancer, gradient_source=source)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return [v.numpy() for v in model.network.trainable_variables]

    single = one_step(tf.distribute.get_strategy())
    for a, b in zip(single, one_step(mirrored)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
