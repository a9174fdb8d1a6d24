"""Decoder-focused architectures (PAD-Net, MTI-Net, PAP-Net, JTRL) on a tiny ResNet.

One module-scoped network per architecture (2 tasks, 32 px, width 8) is trained for two steps and
then checked for shapes, deep supervision, serialisation, export and the summary command.
"""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from mtl_keras import architectures
from mtl_keras.architectures import is_auxiliary, sharing_of, task_of
from mtl_keras.cli import main
from mtl_keras.export import export_saved_model, serving_function
from mtl_keras.metrics import count_params
from mtl_keras.training import MultiTaskModel
from tests.utils import tiny_arrays, tiny_dataset, tiny_specs

TASKS = ("semseg", "depth")
SIZE = 32
ARCHS = ("padnet", "mtinet", "papnet", "jtrl")
# output stride 16: levels at strides 4, 8, 16, 16 (one upsampling skipped, as on dilated ResNets)
BACKBONE = {"backbone": "resnet10", "backbone_kwargs": {"width": 8, "output_stride": 16}}
DECODER = {
    "padnet": {"channels": 8},
    "mtinet": {"fpn_channels": 8},
    "papnet": {"channels": 8, "affinity_channels": 4, "affinity_stride": 4},
    "jtrl": {"channels": 8},
}
# deep-supervision tags and their resolution at 32 px
AUX = {
    "padnet": {"initial": 8},
    "mtinet": {"scale_0": 8, "scale_1": 4, "scale_2": 2, "scale_3": 2},
    "papnet": {"initial": 8},
    "jtrl": {"scale_1": 4, "scale_2": 2, "scale_3": 2},
}


def _specs():
    return tiny_specs(TASKS)


def _build(arch, **kwargs):
    keras.utils.set_random_seed(0)
    kwargs = {**BACKBONE, "head_kwargs": DECODER[arch], "image_size": (SIZE, SIZE), **kwargs}
    return architectures.build(arch, list(_specs().values()), **kwargs)


@pytest.fixture(scope="module", params=ARCHS)
def trained(request):
    """The architecture's network after two SGD steps (batch 2) with its deep supervision.

    The steps run eagerly: tracing the training graph of these many-layer decoders costs 10-15 s
    each (the compiled path is covered by tests/training); export below traces the network.
    """
    net = _build(request.param)
    before = {v.path: v.numpy().copy() for v in net.trainable_variables}
    model = MultiTaskModel(net, list(_specs().values()), balancer="fixed")
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    history = model.fit(
        tiny_dataset(TASKS, n=4, size=SIZE, batch=2), epochs=1, verbose=0, shuffle=False
    )
    logs = {k: v[-1] for k, v in history.history.items()}
    return types.SimpleNamespace(arch=request.param, net=net, model=model, logs=logs, before=before)


def test_outputs_per_task_and_scale(trained):
    specs = _specs()
    out = trained.net(tiny_arrays(TASKS, n=2, size=SIZE)["image"])
    expected = {t: (2, SIZE, SIZE, s.channels) for t, s in specs.items()}
    for tag, res in AUX[trained.arch].items():
        expected.update({f"{t}/{tag}": (2, res, res, s.channels) for t, s in specs.items()})
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())


def test_tasks_inform_each_other(trained):
    """Cross-task modules make one task's prediction branch shared with the other task."""
    sharing = sharing_of(trained.net)
    assert len(sharing.representation_layers) >= 1
    shared = {v.path.split("/")[0] for v in sharing.shared_variables}
    for t in TASKS:  # some layer named after task t is used by both tasks' outputs
        assert any(name.startswith(f"{t}_") for name in shared), (t, sorted(shared)[:10])


def test_two_steps_train_every_kernel_with_deep_supervision(trained):
    logs = trained.logs
    for t in TASKS:
        for tag in AUX[trained.arch]:
            assert np.isfinite(logs[f"{t}/{tag}_loss"]) and logs[f"{t}/{tag}_loss"] > 0
    unchanged = [
        v.path
        for v in trained.net.trainable_variables
        if v.ndim == 4 and np.array_equal(trained.before[v.path], v.numpy())
    ]
    assert not unchanged  # every convolution got a gradient: no dead branch


def test_task_loss_is_main_plus_deep_supervision(trained):
    arrays = tiny_arrays(TASKS, n=2, size=SIZE, seed=1)
    labels = {t: tf.constant(arrays[t]) for t in TASKS}
    losses, terms = trained.model.task_losses(labels, trained.net(arrays["image"]))
    for i, t in enumerate(TASKS):
        aux = [float(v) for k, v in terms.items() if is_auxiliary(k) and task_of(k) == t]
        assert len(aux) == len(AUX[trained.arch]) and min(aux) > 0
        assert float(losses[i]) == pytest.approx(float(terms[t]) + sum(aux), rel=1e-5)
        assert float(losses[i]) > float(terms[t])


def test_keras_round_trip(trained, tmp_path):
    path = str(tmp_path / f"{trained.arch}.keras")
    trained.net.save(path)
    loaded = keras.saving.load_model(path)
    images = tiny_arrays(TASKS, n=2, size=SIZE, seed=2)["image"]
    expected, got = trained.net(images), loaded(images)
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(
            np.asarray(got[k]), np.asarray(expected[k]), atol=1e-5, err_msg=k
        )


def test_export_drops_deep_supervision(trained, tmp_path):
    path = export_saved_model(
        trained.net, _specs(), str(tmp_path), trained.arch, image_size=(SIZE, SIZE)
    )
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    signature = saved.meta_graphs[0].signature_def["serving_default"]
    assert sorted(signature.outputs) == ["depth", "semseg_class", "semseg_probs"]
    # the same serving computation, run in process: every output at the request's size
    out = serving_function(trained.net, _specs(), (SIZE, SIZE))(tf.zeros([1, 24, 30, 3], tf.uint8))
    assert out["semseg_class"].shape == (1, 24, 30) and out["depth"].shape == (1, 24, 30, 1)


def test_summary_counts_the_same_network(trained, capsys):
    argv = ["summary", "--arch", trained.arch, "--backbone", "resnet10", "--tasks", ",".join(TASKS)]
    argv += ["--image-size", str(SIZE), str(SIZE)]
    argv += ["--set", f"backbone_kwargs={json.dumps(BACKBONE['backbone_kwargs'])}"]
    argv += ["--set", f"head_kwargs={json.dumps(DECODER[trained.arch])}"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == count_params(trained.net)["params"] and info["flops"] > 0


@pytest.mark.parametrize("arch", ["padnet", "mtinet"])
def test_auxiliary_tasks_get_deep_supervision_only(arch):
    """The survey's NYUD-v2 setting: normals predicted at the initial stage / scales only, sending
    distillation messages to the main tasks and trained by a fixed-weight auxiliary loss."""
    aux = tiny_specs(("normals",))
    net = _build(arch, auxiliary_tasks=list(aux.values()))
    assert "normals" not in net.output
    assert {f"normals/{tag}" for tag in AUX[arch]} <= set(net.output)
    names = {layer.name for layer in net.layers}
    assert any(n.startswith("semseg") and "_from_normals" in n for n in names)
    assert not any(n.startswith("normals") and "_from_" in n for n in names)
    with pytest.raises(ValueError, match="both predicted and auxiliary"):
        _build(arch, auxiliary_tasks=["semseg"])

    model = MultiTaskModel(
        net,
        list(_specs().values()),
        auxiliary_tasks=list(aux.values()),
        auxiliary_weights={"normals": 10.0},
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    before = {v.path: v.numpy().copy() for v in net.trainable_variables}
    logs = model.train_step(next(iter(tiny_dataset((*TASKS, "normals"), n=2, size=SIZE, batch=2))))
    assert all(np.isfinite(float(logs[f"normals/{tag}_loss"])) for tag in AUX[arch])
    moved = [
        v.path
        for v in net.trainable_variables
        if v.path.startswith("normals") and not np.array_equal(before[v.path], v.numpy())
    ]
    assert moved  # the auxiliary branch is trained
    assert "normals" not in model.tasks and "normals" in model.auxiliary_tasks
