"""Properties every encoder-focused architecture has: per-task outputs, `.keras` round trip, two
training steps with `MultiTaskModel`, SavedModel export, and counts from `mtl-keras summary`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.architectures import sharing_of
from mtl_keras.cli import main
from mtl_keras.export import export_saved_model, serving_function
from mtl_keras.metrics import count_params
from mtl_keras.training import MultiTaskModel
from tests.architectures.tiny import ARCHITECTURES, SIZE, TASKS, raw_images, tiny_architecture
from tests.utils import tiny_dataset, tiny_specs

pytestmark = pytest.mark.parametrize("arch", ARCHITECTURES)


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


def test_one_output_per_task_at_input_resolution(arch):
    out = _numpy(tiny_architecture(arch)(raw_images(), training=False))
    specs = tiny_specs(TASKS)
    assert {k: v.shape for k, v in out.items()} == {
        t: (2, SIZE, SIZE, specs[t].channels) for t in TASKS
    }
    assert all(np.isfinite(v).all() for v in out.values())


def test_keras_file_round_trip(arch, tmp_path):
    network = tiny_architecture(arch)
    path = str(tmp_path / f"{arch}.keras")
    network.save(path)
    loaded = keras.saving.load_model(path)
    x = raw_images(seed=1)
    expected, got = _numpy(network(x, training=False)), _numpy(loaded(x, training=False))
    assert loaded.name == network.name and sorted(got) == sorted(TASKS)
    for task in TASKS:
        np.testing.assert_array_equal(got[task], expected[task])


def test_every_parameter_is_connected_to_an_output(arch):
    network = tiny_architecture(arch)
    with tf.GradientTape() as tape:
        out = network(raw_images(), training=True)
        objective = tf.add_n([tf.reduce_mean(tf.square(v)) for v in out.values()])
    grads = tape.gradient(objective, network.trainable_variables)
    unconnected = [v.path for v, g in zip(network.trainable_variables, grads) if g is None]
    assert unconnected == []


def test_two_fit_steps(arch):
    network = tiny_architecture(arch)
    model = MultiTaskModel(network, list(tiny_specs(TASKS).values()))
    # eager: the trainer's graph mode is tested in tests/training; tracing costs ~6 s per network
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    before = [np.array(v) for v in network.trainable_variables]
    history = model.fit(tiny_dataset(TASKS, n=4, size=SIZE, batch=2), epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert np.isfinite(history.history["loss"]).all()
    changed = [
        not np.array_equal(np.array(v), b)
        for v, b in zip(network.trainable_variables, before, strict=True)
    ]
    # all but parameters behind ReLUs that are dead on this tiny batch
    assert np.mean(changed) > 0.95


def test_saved_model_export_and_reload(arch, tmp_path):
    network = tiny_architecture(arch)
    specs = tiny_specs(TASKS)
    path = export_saved_model(network, specs, str(tmp_path), arch, image_size=(SIZE, SIZE))
    images = np.random.default_rng(2).integers(0, 256, (2, 40, 36, 3), dtype=np.uint8)
    expected = serving_function(network, specs, (SIZE, SIZE))(tf.constant(images))
    got = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    assert set(got) == set(expected) and got["semseg_class"].shape == (2, 40, 36)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key].numpy(), value.numpy(), atol=1e-5, err_msg=key)


def test_summary_reports_the_built_model(arch, capsys):
    argv = ["summary", "--arch", arch, "--backbone", "resnet10", "--tasks", ",".join(TASKS)]
    argv += ["--image-size", str(SIZE), str(SIZE), "--set", "head=conv"]
    argv += ["--set", 'backbone_kwargs={"width": 8, "output_stride": 8}']
    argv += ["--set", 'head_kwargs={"filters": 8, "num_convs": 1}']
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    counts = count_params(tiny_architecture(arch))
    assert info["params"] == counts["params"]
    assert info["non_trainable_params"] == counts["non_trainable_params"]
    assert info["flops"] > 2 * info["params"]  # every weight is used at least once per pixel


def test_sharing_is_declared_consistently(arch):
    sharing = sharing_of(tiny_architecture(arch))  # raises if a marked representation is bypassed
    marked = {"mtan", "branched"}  # one shared trunk; soft sharing and ASTMT have none
    assert bool(sharing.representation_layers) == (arch in marked)
    assert sharing.shared_variables and sharing.task_variables
