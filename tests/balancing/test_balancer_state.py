"""Every balancer runs in a graph, agrees across tf.distribute replicas, saves and restores."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.utils import two_replicas

TASKS = ["a", "b", "c"]
KWARGS = {
    "pcgrad": {"seed": 1},
    "graddrop": {"seed": 1},
    "gradvac": {"seed": 1},
    "rlw": {"seed": 1},
    "db_mtl": {"beta": 0.5},
}
# every method with its defaults (epochs end after every step), plus variants with other state
CASES = [(name, KWARGS.get(name, {})) for name in balancing.available()] + [
    ("dwa", {"mode": "window", "window": 1}),
    ("gradvac", {"seed": 1, "group": "variable"}),
    ("nash_mtl", {"update_every": 2}),
    ("dtp", {"loss_scale": "none"}),
]
IDS = [name + "-".join(["", *map(str, kwargs.values())]) for name, kwargs in CASES]
STEPS = 3


def inputs(step):
    rng = np.random.default_rng(step)
    jac = rng.normal(size=(3, 6)).astype(np.float32)
    jac[1] = -jac[0] + 0.2 * jac[1]
    losses = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    return tf.constant(jac), tf.constant(losses), tf.constant(step, tf.int64)


def make(name, kwargs):
    b = balancing.get(name, **kwargs)
    b.setup(TASKS)
    if b.level == "gradient":
        b.build_parameter_state([2, 4])
    return b


def one_step(b, jac, losses, step):
    """What a trainer does with a balancer in one step; returns the output and any weights."""
    if b.level == "loss":
        objective, w = b.combine(losses, losses, step)
        if b.needs_losses_after_step:
            b.after_step(losses, 0.9 * losses, step)
        return tf.concat([objective[None], w], 0)
    return b.aggregate(jac, losses, step)


def state(b):
    return [np.array(v) for v in b.weights]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_graph_matches_eager_and_state_agrees(name, kwargs):
    eager, graph = make(name, kwargs), make(name, kwargs)
    run_graph = tf.function(lambda *args: one_step(graph, *args))
    for step in range(STEPS):
        a = one_step(eager, *inputs(step))
        b = run_graph(*inputs(step))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        eager.on_epoch_end()
        graph.on_epoch_end()
    for x, y in zip(state(eager), state(graph), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_two_replicas_compute_what_one_device_computes(name, kwargs):
    strategy = two_replicas()
    single = make(name, kwargs)
    with strategy.scope():
        mirrored = make(name, kwargs)

    @tf.function
    def distributed(jac, losses, step):
        return strategy.run(lambda: one_step(mirrored, jac, losses, step))

    for step in range(STEPS):
        expected = one_step(single, *inputs(step)).numpy()
        per_replica = strategy.experimental_local_results(distributed(*inputs(step)))
        assert len(per_replica) == 2
        for out in per_replica:
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        single.on_epoch_end()
        mirrored.on_epoch_end()  # eager, cross-replica context: as a Keras callback calls it
    for x, y in zip(state(single), state(mirrored), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_graddrop_representation_under_two_replicas_equals_one_device():
    strategy = two_replicas()
    rng = np.random.default_rng(0)
    grads = tf.constant(rng.normal(size=(3, 4, 5, 2)), tf.float32)
    rep = tf.constant(rng.normal(size=(4, 5, 2)), tf.float32)
    single = make("graddrop", {"seed": 1})
    (whole,) = single.representation_gradients([grads], [rep], None, tf.constant(2, tf.int64))
    with strategy.scope():
        mirrored = make("graddrop", {"seed": 1})

    def replica_fn():
        ctx = tf.distribute.get_replica_context()
        i = ctx.replica_id_in_sync_group
        local_g, local_rep = grads[:, 2 * i : 2 * i + 2], rep[2 * i : 2 * i + 2]

        def total(x):
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)

        return mirrored.representation_gradients(
            [local_g], [local_rep], None, tf.constant(2, tf.int64), replica_sum=total
        )[0]

    halves = strategy.experimental_local_results(tf.function(lambda: strategy.run(replica_fn))())
    np.testing.assert_allclose(tf.concat(halves, 0), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_config_round_trip_and_state_restore(name, kwargs):
    b = make(name, kwargs)
    clone = type(b).from_config(b.get_config())
    assert clone.get_config() == b.get_config()
    for step in range(2):
        one_step(b, *inputs(step))
    restored = make(name, kwargs)
    restored.set_weights(b.get_weights())
    np.testing.assert_allclose(
        one_step(restored, *inputs(5)), one_step(b, *inputs(5)), rtol=1e-6, atol=1e-7
    )


def test_statistics_of_the_gramian():
    jac = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]], np.float32)
    stats = balancing.gramian_statistics(tf.matmul(jac, jac, transpose_b=True))
    np.testing.assert_allclose(stats["norms"], [1.0, np.sqrt(2.0), 0.0], rtol=1e-6)
    np.testing.assert_allclose(stats["cosine"][0, 1], -1 / np.sqrt(2.0), rtol=1e-6)
    assert int(stats["conflicts"]) == 1 and float(stats["cosine"][2, 2]) == 0.0


@pytest.mark.parametrize("name", balancing.available())
def test_mixed_precision_policy_keeps_state_in_float32(name):
    keras = pytest.importorskip("keras")
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        b = make(name, KWARGS.get(name, {}))
        jac, losses, step = inputs(0)
        out = one_step(b, tf.cast(jac, tf.float16), losses, step)  # trainer's losses: float32
        reference = one_step(make(name, KWARGS.get(name, {})), jac, losses, step)
    finally:
        keras.config.set_dtype_policy(policy)
    assert all(v.dtype in ("float32", "int64") for v in b.weights)
    np.testing.assert_allclose(tf.cast(out, tf.float32), reference, rtol=2e-2, atol=2e-2)
