"""Transformer-era decoders (DPT, InvPT, MLoRE) on a tiny keras-hub ViT (2 layers, width 16,
patch 8, 32 px): shapes, deep supervision, training, serialisation, export, summary, two
replicas and mixed precision. One module-scoped network per architecture."""

import json
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import architectures
from mtl_keras.architectures import sharing_of
from mtl_keras.architectures.base import task_specs_of
from mtl_keras.cli import main
from mtl_keras.export import export_saved_model
from mtl_keras.metrics import count_params
from mtl_keras.training import MultiTaskModel
from tests.utils import tiny_arrays, tiny_dataset, tiny_specs, two_replicas

TASKS = ("semseg", "depth")
SIZE = 32
ARCHS = ("dpt", "invpt", "mlore")
VIT = {
    "patch_size": 8,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "mlp_dim": 32,
    "image_shape": (SIZE, SIZE, 3),
}
BACKBONE = {"backbone": "keras_hub.ViTBackbone", "backbone_kwargs": VIT}
DECODER = {
    "dpt": {"features": 8},
    "invpt": {"embed_dim": 16, "prediction_channels": 8},
    "mlore": {"channels": 16, "ranks": [2, 4, 6], "specific_rank": 2, "top_k": 2},
}
#: deep-supervision outputs and their side at 32 px (the ViT adapter's P5: stride 16 here)
AUX = {"dpt": {}, "invpt": {"preliminary": 2}, "mlore": {}}


def _specs():
    return tiny_specs(TASKS)


def _build(arch, **kwargs):
    keras.utils.set_random_seed(0)
    kwargs = {**BACKBONE, "head_kwargs": DECODER[arch], "image_size": (SIZE, SIZE), **kwargs}
    return architectures.build(arch, list(_specs().values()), **kwargs)


def _batch(n=2, seed=0):
    arrays = tiny_arrays(TASKS, n=n, size=SIZE, seed=seed)
    return tf.constant(arrays["image"]), {t: tf.constant(arrays[t]) for t in TASKS}


@pytest.fixture(scope="module", params=ARCHS)
def trained(request):
    """The network after two eager SGD steps (batch 2) with its deep supervision."""
    net = _build(request.param)
    before = {v.path: v.numpy().copy() for v in net.trainable_variables}
    model = MultiTaskModel(net, list(_specs().values()), balancer="fixed")
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    history = model.fit(
        tiny_dataset(TASKS, n=4, size=SIZE, batch=2), epochs=1, verbose=0, shuffle=False
    )
    logs = {k: v[-1] for k, v in history.history.items()}
    return types.SimpleNamespace(arch=request.param, net=net, model=model, logs=logs, before=before)


def test_outputs_per_task_and_deep_supervision(trained):
    out = trained.net(_batch()[0])
    expected = {t: (2, SIZE, SIZE, s.channels) for t, s in _specs().items()}
    for tag, side in AUX[trained.arch].items():
        expected.update({f"{t}/{tag}": (2, side, side, s.channels) for t, s in _specs().items()})
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())


def test_encoder_is_the_shared_representation(trained):
    sharing = sharing_of(trained.net)
    assert sharing.representation_layers
    shared = {v.path.split("/")[0] for v in sharing.shared_variables}
    assert "vit" in shared  # the keras-hub encoder layer
    if trained.arch == "invpt":  # multi-task attention: the decoder is shared too
        assert any(name.startswith("stage") for name in shared)
    if trained.arch == "mlore":  # experts and the generic path are shared by the tasks
        assert any("expert" in name or "generic" in name for name in shared)


def test_two_steps_train_the_network(trained):
    for t in TASKS:
        assert np.isfinite(trained.logs[f"{t}_loss"])
        for tag in AUX[trained.arch]:
            assert trained.logs[f"{t}/{tag}_loss"] > 0
    unchanged = [
        v.path
        for v in trained.net.trainable_variables
        if v.ndim == 4 and np.array_equal(trained.before[v.path], v.numpy())
    ]
    # MLoRE routes each image to its top-k experts only: an expert no image chose is untouched;
    # InvPT reads P3..P5, so the ViT adapter's P2 reassembly is unused
    allowed = {"dpt": (), "invpt": ("reassemble1_",), "mlore": ("expert",)}[trained.arch]
    assert all(any(a in p for a in allowed) for p in unchanged), unchanged


def test_keras_round_trip(trained, tmp_path):
    path = str(tmp_path / f"{trained.arch}.keras")
    trained.net.save(path)
    loaded = keras.saving.load_model(path)
    images = _batch(seed=2)[0]
    expected, got = trained.net(images), loaded(images)
    assert set(got) == set(expected)
    for k in expected:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(expected[k]), atol=1e-5)


def test_export_serves_raw_pixels(trained, tmp_path):
    path = export_saved_model(
        trained.net, _specs(), str(tmp_path), trained.arch, image_size=(SIZE, SIZE)
    )
    served = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.zeros([1, 24, 30, 3], tf.uint8)
    )
    assert sorted(served) == ["depth", "semseg_class", "semseg_probs"]
    assert served["depth"].shape == (1, 24, 30, 1)


def test_summary_counts_the_same_network(trained, capsys):
    argv = ["summary", "--arch", trained.arch, "--backbone", BACKBONE["backbone"]]
    argv += ["--tasks", ",".join(TASKS), "--image-size", str(SIZE), str(SIZE)]
    argv += ["--set", f"backbone_kwargs={json.dumps(VIT)}"]
    argv += ["--set", f"head_kwargs={json.dumps(DECODER[trained.arch])}"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == count_params(trained.net)["params"] and info["flops"] > 0


def test_wrong_options_are_explained():
    with pytest.raises(ValueError, match=r"invpt: unknown decoder option\(s\) \['dim'\]"):
        _build("invpt", head_kwargs={"dim": 8})
    with pytest.raises(ValueError, match="dpt builds its own task heads; head must be 'dpt'"):
        _build("dpt", head="deeplab")
    with pytest.raises(ValueError, match=r"needs static feature sizes.*image_size=\(H, W\)"):
        architectures.build(
            "mlore", list(_specs().values()), backbone="resnet10",
            backbone_kwargs={"width": 8}, head_kwargs=DECODER["mlore"],
        )  # fmt: skip


@pytest.mark.large
@pytest.mark.parametrize("arch", ["invpt"])  # DPT's task decoders do not interact
def test_two_replicas_step_equals_one_device(arch):
    """(MLoRE's, with its load-balancing loss, is in test_mlore_balance.py.)"""
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py)")
    x, y = _batch(n=4)
    ds = tf.data.Dataset.from_tensors((x, y))

    def one_step(strategy):
        with strategy.scope():
            net = _build(arch, head_kwargs=DECODER[arch])
            model = MultiTaskModel(net, list(_specs().values()), balancer="fixed")
            model.compile(optimizer=keras.optimizers.SGD(0.05))
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return {v.path: v.numpy() for v in model.network.trainable_variables}

    single, mirrored = one_step(tf.distribute.get_strategy()), one_step(two_replicas())
    for k, v in single.items():
        np.testing.assert_allclose(mirrored[k], v, rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("arch", ARCHS)
def test_one_mixed_float16_step(arch):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        net = _build(arch)
        model = MultiTaskModel(net, list(_specs().values()), balancer="fixed")
        model.compile(
            optimizer=keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(0.01), initial_scale=2.0**8
            ),
            run_eagerly=True,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    assert net.get_layer("vit").compute_dtype == "float16"
    logs = model.train_on_batch(*_batch(), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert int(model.optimizer.iterations.numpy()) == 1


def test_network_records_its_tasks(trained):
    assert sorted(task_specs_of(trained.net)) == sorted(TASKS)


def test_mlore_router_top_k_softmax_and_an_unbounded_path_weight():
    from mtl_keras.architectures.mlore import ExpertRouter

    router = ExpertRouter(num_experts=5, top_k=2, hidden=8)
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 6)).astype("float32")
    w = np.asarray(router(x))[:, 0, 0]
    logits = np.asarray(router.fc2(router.fc1(x.mean(axis=(1, 2)))))
    experts = w[:, :5]
    np.testing.assert_allclose(experts.sum(-1), 1.0, rtol=1e-6)
    assert ((experts > 0).sum(-1) == 2).all()  # the top 2 only
    for row, e in zip(logits[:, :5], experts):
        top = np.argsort(row)[-2:]
        np.testing.assert_allclose(e[top], np.exp(row[top]) / np.exp(row[top]).sum(), rtol=1e-5)
    # the specific path's weight is the router's last output itself, as in the released code
    np.testing.assert_allclose(w[:, 5], logits[:, 5], rtol=1e-6)
