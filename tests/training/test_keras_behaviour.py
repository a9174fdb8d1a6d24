"""MultiTaskModel behaves like a Keras model: specs from the network, saveable network in every
gradient mode, compile refuses loss weights, predict and export serve, old checkpoints load, and
the README's example runs as written."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.architectures import build_hard_sharing
from mtl_keras.training import MultiTaskModel
from tests.utils import micro_network, tiny_arrays, tiny_dataset, tiny_specs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "trainer_v0_1")
TASKS = ("semseg", "depth")


def _network(num_classes=5):
    return build_hard_sharing(
        list(TASKS),
        backbone="resnet10",
        backbone_kwargs={"width": 8, "output_stride": 8},
        head="conv",
        head_kwargs={"filters": 8, "num_convs": 1},
        image_size=(32, 32),
        task_options={"semseg": {"num_classes": num_classes}},
    )


def test_specs_come_from_the_network():
    model = MultiTaskModel(_network(5))
    assert model.tasks["semseg"].channels == 5 and model.tasks["semseg"].options == {
        "num_classes": 5
    }


def test_given_specs_that_differ_from_the_network_name_both():
    from mtl_keras import tasks

    with pytest.raises(ValueError, match=r"'semseg'.*num_classes': 40.*num_classes': 5"):
        MultiTaskModel(_network(5), [tasks.get("semseg", num_classes=40), tasks.get("depth")])


@pytest.mark.parametrize(
    "balancer,source", [("fixed", "auto"), ("mgda", "shared"), ("mgda", "representation")]
)
def test_network_stays_saveable_after_wrapping(tmp_path, balancer, source):
    network = _network()
    MultiTaskModel(network, balancer=balancer, gradient_source=source)
    path = str(tmp_path / "net.keras")
    network.save(path)
    loaded = keras.models.load_model(path)
    x = np.zeros((1, 32, 32, 3), np.float32)
    np.testing.assert_allclose(loaded(x)["depth"], network(x)["depth"], rtol=1e-6, atol=1e-6)


def test_compile_refuses_loss_and_loss_weights():
    model = MultiTaskModel(_network())
    with pytest.raises(ValueError, match=r'balancer="fixed", balancer_kwargs=\{"weights"'):
        model.compile(optimizer="adam", loss_weights={"semseg": 1.0, "depth": 2.0})
    with pytest.raises(ValueError, match="does not take loss="):
        model.compile(optimizer="adam", loss="mse")


def test_predict_and_export_serve_the_same_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(micro_network(TASKS, size=32), list(tiny_specs(TASKS).values()))
    model.compile(optimizer="adam")
    images = tiny_arrays(TASKS, n=2)["image"].astype(np.uint8)
    served = model.predict(images, verbose=0)
    assert set(served) == {"semseg_class", "semseg_probs", "depth"}
    np.testing.assert_allclose(served["semseg_probs"].sum(-1), 1.0, rtol=1e-5)
    raw = model.network.predict(images, verbose=0)
    np.testing.assert_array_equal(served["semseg_class"], raw["semseg"].argmax(-1))
    path = str(tmp_path / "export")
    model.export(path)
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    tasks = [t.decode() for t in loaded.signatures["metadata"]()["tasks"].numpy()]
    assert tasks == list(TASKS)  # the same metadata as mtl-keras export
    for key in served:
        np.testing.assert_allclose(out[key].numpy(), served[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name,balancer,source",
    [
        ("fixed", "fixed", "auto"),
        ("uncertainty", "uncertainty", "auto"),
        ("mgda_representation", "mgda", "representation"),
        ("db_mtl_shared", "db_mtl", "shared"),
    ],
)
def test_checkpoints_of_the_0_1_trainer_still_load(name, balancer, source):
    """Files written by the 0.1.0 trainer (tests/fixtures/trainer_v0_1/make_fixtures.py)."""
    tasks = ("semseg", "depth", "normals")
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    keras.utils.set_random_seed(1)
    model = MultiTaskModel(
        micro_network(tasks), list(tiny_specs(tasks).values()), balancer, gradient_source=source
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(FIXTURES, f"{name}.weights.h5"))
    out = model.network(expected["images"], training=False)
    for t in tasks:
        np.testing.assert_allclose(out[t], expected[f"{name}/{t}"], rtol=1e-6, atol=1e-6)
    for v in model.balancer.weights:
        np.testing.assert_array_equal(np.asarray(v), expected[f"{name}/balancer/{v.name}"])
    assert int(model.optimizer.iterations.numpy()) == int(expected[f"{name}/iterations"])
    model.fit(tiny_dataset(tasks, n=2, size=16), epochs=1, verbose=0)  # and training continues


def test_network_weights_of_0_1_load():
    network = micro_network(("semseg", "depth", "normals"))
    network.load_weights(os.path.join(FIXTURES, "network.weights.h5"))
    expected = np.load(os.path.join(FIXTURES, "expected.npz"))
    out = network(expected["images"], training=False)
    np.testing.assert_allclose(out["depth"], expected["fixed/depth"], rtol=1e-6, atol=1e-6)


@pytest.mark.large
def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert os.path.exists(tmp_path / "saved_models" / "readme_example" / "1" / "saved_model.pb")


def _semseg_depth_data(n=4):
    arrays = tiny_arrays(TASKS, n=n)
    labels = {"semseg": np.minimum(arrays["semseg"], 4).astype(np.uint8), "depth": arrays["depth"]}
    return arrays["image"], tf.data.Dataset.from_tensor_slices((arrays["image"], labels)).batch(2)


@pytest.mark.parametrize("balancer,source", [("uncertainty", "auto"), ("mgda", "representation")])
def test_keras_file_round_trip_continues_training_identically(tmp_path, balancer, source):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(_network(), balancer=balancer, gradient_source=source)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images, data = _semseg_depth_data()
    model.fit(data, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is MultiTaskModel and loaded.tasks["semseg"].channels == 5
    assert loaded.gradient_source == model.gradient_source
    for a, b in zip(model.balancer.weights, loaded.balancer.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    np.testing.assert_array_equal(
        loaded.predict(images, verbose=0)["depth"], model.predict(images, verbose=0)["depth"]
    )
    model.fit(data, epochs=1, verbose=0)
    loaded.fit(data, epochs=1, verbose=0)
    for a, b in zip(model.network.weights, loaded.network.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert "MultiTaskModel" in model.to_json()


def test_model_checkpoint_writes_the_best_keras_file_inside_fit(tmp_path):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(_network())
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    _, data = _semseg_depth_data()
    path = str(tmp_path / "best.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    model.fit(data, validation_data=data, epochs=2, verbose=0, callbacks=[checkpoint])
    loaded = keras.models.load_model(path)
    assert set(loaded.tasks) == set(TASKS)


def test_adversarial_keras_file_round_trip(tmp_path):
    """ASTMT's discriminator is an objective term: the adversarial trainer saves as a .keras file
    and loads with its discriminator, its settings and its optimizer state."""
    from mtl_keras.architectures import build_astmt
    from mtl_keras.training.adversarial import AdversarialMultiTaskModel
    from tests.architectures.tiny import TINY
    from tests.utils import tiny_specs

    keras.utils.set_random_seed(0)
    specs = list(tiny_specs(TASKS).values())
    model = AdversarialMultiTaskModel(build_astmt(specs, **TINY), specs, reversal_steps=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    arrays = tiny_arrays(TASKS, n=2)
    data = tf.data.Dataset.from_tensor_slices(
        (arrays["image"], {t: arrays[t] for t in TASKS})
    ).batch(2)
    model.fit(data, epochs=1, verbose=0)
    path = str(tmp_path / "astmt.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is AdversarialMultiTaskModel and len(loaded.objective_terms) == 1
    assert (loaded.adversarial_weight, loaded.reversal_steps) == (0.01, 10)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert int(loaded.optimizer.iterations.numpy()) == 1
    np.testing.assert_array_equal(
        loaded.predict(arrays["image"], verbose=0)["depth"],
        model.predict(arrays["image"], verbose=0)["depth"],
    )
