"""MLoRE's load-balancing loss (Yang et al., CVPR 2024; ``balance_weight``): its value against
the released formula in numpy, no loss at weight 0 (and no change to the network), the
``.keras`` round trip, and two replicas taking one device's step. A tiny MLoRE: ResNet-10 of
width 8, 3 experts (top-2), 32 px."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import architectures
from mtl_keras.architectures import mlore, sharing_of
from mtl_keras.training import MultiTaskModel
from tests.utils import tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth")
SIZE = 32
LEVELS = ("P4", "P5")
#: one level (the two-replica tests) mixes its single level by a softmax over one channel
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")
DECODER = {"channels": 16, "ranks": [2, 4, 6], "specific_rank": 2, "top_k": 2, "levels": LEVELS}


def _build(balance_weight, **decoder):
    keras.utils.set_random_seed(0)
    return architectures.build(
        "mlore",
        list(tiny_specs(TASKS).values()),
        backbone="resnet10",
        backbone_kwargs={"width": 8},
        head_kwargs={**DECODER, "balance_weight": balance_weight, **decoder},
        image_size=(SIZE, SIZE),
    )


def _batch(n=4, seed=0):
    arrays = tiny_arrays(TASKS, n=n, size=SIZE, seed=seed)
    return tf.constant(arrays["image"]), {t: tf.constant(arrays[t]) for t in TASKS}


def _released_formula(gates_by_module, weight):
    """The released ``losses/loss_schemes.py`` in numpy: per module, the tasks' gates stacked
    over (task, image), their mean per expert, ``(std / mean)^2`` (unbiased std); summed."""
    total = 0.0
    for gates in gates_by_module:
        importance = np.concatenate(gates, axis=0).mean(axis=0)
        total += (importance.std(ddof=1) / importance.mean()) ** 2
    return weight * total


def _gates(net, x):
    """Per MLoRE module, the tasks' expert gates ``(B, E)`` of a training call."""
    modules = [f"level{k}_mlore{j}" for k in range(len(LEVELS)) for j in (1, 2)]
    names = [[f"{t}_{m}_router" for t in TASKS] for m in modules]
    probe = keras.Model(net.input, [[net.get_layer(n).output for n in row] for row in names])
    out = probe(x, training=True)
    return [[np.asarray(g).reshape(g.shape[0], -1)[:, :-1] for g in row] for row in out]


def test_loss_is_the_released_formula():
    weight = 0.3
    net = _build(weight)
    x, _ = _batch()
    net(x, training=True)
    (got,) = net.losses
    gates = _gates(net, x)
    assert len(gates) == 2 * len(LEVELS) and gates[0][0].shape == (4, 3)
    for g in (g for row in gates for g in row):  # top-2 of 3: rows sum to one, one zero each
        np.testing.assert_allclose(g.sum(axis=1), 1.0, rtol=1e-6)
        assert ((g == 0).sum(axis=1) == 1).all()
    expected = _released_formula(gates, weight)
    assert expected > 1e-3  # the routers at initialisation are not balanced: a real value
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # pooling the tasks is not summing per-task statistics: the check tells them apart
    per_task = _released_formula([[g] for row in gates for g in row], weight)
    assert abs(per_task - expected) > 1e-3 * expected
    net(x, training=False)  # an inference call adds no loss
    assert net.losses == []


def test_weight_zero_adds_nothing_and_the_loss_changes_no_sharing_or_output():
    x, _ = _batch(n=2)
    plain, balanced = _build(0.0), _build(0.5)
    assert not any(isinstance(layer, mlore.LoadBalance) for layer in plain.layers)
    assert sum(isinstance(layer, mlore.LoadBalance) for layer in balanced.layers) == 1
    # the same variables, initialised alike, and the routers stay task-specific
    assert [v.path for v in plain.weights] == [v.path for v in balanced.weights]
    for a, b in zip(plain.weights, balanced.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    s_plain, s_balanced = sharing_of(plain), sharing_of(balanced)
    for field in ("shared_variables", "task_variables"):
        paths = [v.path for v in getattr(s_balanced, field)]
        assert paths == [v.path for v in getattr(s_plain, field)], field
    assert any("_router/" in v.path for v in s_balanced.task_variables)
    out = plain(x, training=True)
    assert plain.losses == []
    for k, v in balanced(x, training=True).items():  # the layer is an identity
        np.testing.assert_array_equal(np.asarray(v), np.asarray(out[k]))
    assert len(balanced.losses) == 1
    with pytest.raises(ValueError, match="balance_weight"):
        _build(-1.0)


def test_keras_round_trip_keeps_the_loss(tmp_path):
    net = _build(5e-4)
    x, _ = _batch(n=2, seed=1)
    path = str(tmp_path / "mlore.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("mlore_balance").get_config()["weight"] == 5e-4
    net(x, training=True)
    loaded(x, training=True)
    assert len(loaded.losses) == 1 and float(loaded.losses[0]) > 0
    np.testing.assert_allclose(float(loaded.losses[0]), float(net.losses[0]), rtol=1e-6)
    copied = copy.deepcopy(loaded.get_layer("mlore_balance"))  # per-thread state copies empty
    assert copied.get_config() == loaded.get_layer("mlore_balance").get_config()
    assert copied.losses == []


def _needs_two_cpus():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py)")


def _one_level(weight):
    return _build(weight, levels=("P5",), grid_level="P5")


def test_each_replica_holds_the_global_batch_loss(monkeypatch):
    """On 2 replicas of 2 images, each replica's network loss is the one-device loss of the 4
    images (all-reduced statistic), once (not the other replica's too); without the all-reduce
    each replica's own statistic would differ."""
    _needs_two_cpus()
    x, _ = _batch(n=4)
    net = _one_level(1.0)
    net(x, training=True)
    (one_device,) = [float(v) for v in net.losses]
    strategy = two_replicas()
    with strategy.scope():
        mirrored = _one_level(1.0)

    def per_replica():
        data = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices(x).batch(4)
        )

        @tf.function
        def run(xb):
            def fn(xl):
                mirrored(xl, training=True)
                losses = mirrored.losses
                return float(len(losses)), tf.add_n(losses)

            return strategy.run(fn, args=(xb,))

        counts, values = run(next(iter(data)))
        local = strategy.experimental_local_results
        return [float(c) for c in local(counts)], [float(v) for v in local(values)]

    counts, values = per_replica()
    assert counts == [1.0, 1.0]
    np.testing.assert_allclose(values, [one_device] * 2, rtol=1e-5)
    monkeypatch.setattr(mlore, "replica_sum", lambda t: t)
    _, own = per_replica()
    assert min(abs(v - one_device) for v in own) > 1e-2 * one_device, (own, one_device)


@pytest.mark.large
def test_two_replicas_step_equals_one_device():
    _needs_two_cpus()
    x, y = _batch(n=4)
    weight, lr = 10.0, 0.05
    # the balance loss moves the routers far more than the tolerance below
    net = _one_level(weight)
    routers = [v for v in net.trainable_variables if "_router/" in v.path]
    with tf.GradientTape() as tape:
        net(x, training=True)
        (loss,) = net.losses
    step = max(float(tf.reduce_max(tf.abs(g))) for g in tape.gradient(loss, routers)) * lr
    assert step > 1e-3, step

    def one_step(strategy):
        with strategy.scope():
            net = _one_level(weight)
            model = MultiTaskModel(net, list(tiny_specs(TASKS).values()), balancer="fixed")
            model.compile(optimizer=keras.optimizers.SGD(lr))
        model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0, shuffle=False)
        return {v.path: v.numpy() for v in model.network.trainable_variables}

    single, mirrored = one_step(tf.distribute.get_strategy()), one_step(two_replicas())
    for k, v in single.items():
        np.testing.assert_allclose(mirrored[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
