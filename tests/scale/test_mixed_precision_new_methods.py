"""Mixed precision with STCH (loss level, past its warm-up) and MoCo (gradient level, with a
(T, P) tracked-gradient state): float32 state, finite steps, the update of float32 training, and
an overflowing step that leaves MoCo's state as it was; Auto-Lambda's meta step is float32's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.training import MultiTaskModel
from mtl_keras.training.precision import loss_scale, precision_policy
from tests.utils import micro_network, tiny_arrays, tiny_specs

TASKS = ("semseg", "depth", "normals")
#: (balancer, gradient source, arguments): STCH leaves its warm-up after one step
CASES = [
    ("stch", "auto", {"unit": "step", "warmup": 0, "estimate": 1}),
    ("moco", "shared", {}),
]
IDS = [name for name, _, _ in CASES]


def _batch(n=2, size=16):
    arrays = tiny_arrays(TASKS, n=n, size=size)
    return tf.constant(arrays["image"]), {t: tf.constant(arrays[t]) for t in TASKS}


def _model(policy, balancer, source, kwargs, optimizer=None):
    with precision_policy(policy):
        keras.utils.set_random_seed(0)
        model = MultiTaskModel(
            micro_network(TASKS),
            list(tiny_specs(TASKS).values()),
            balancer,
            balancer_kwargs=kwargs,
            gradient_source=source,
        )
        model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05))
        model.optimizer.build(model.trainable_variables)
    return model


@pytest.mark.parametrize("balancer,source,kwargs", CASES, ids=IDS)
def test_two_mixed_float16_steps(balancer, source, kwargs):
    model = _model("mixed_float16", balancer, source, kwargs)
    assert model.network.get_layer("enc1").compute_dtype == "float16"
    assert loss_scale(model.optimizer) is not None
    assert all(v.dtype in ("float32", "int64") for v in model.balancer.weights)
    before = [v.numpy() for v in model.network.trainable_variables]
    for _ in range(2):
        logs = model.train_on_batch(*_batch(), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert int(model.optimizer.iterations.numpy()) == 2  # applied, not skipped
    after = [v.numpy() for v in model.network.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after) if a.ndim == 4)
    assert all(np.all(np.isfinite(v.numpy())) for v in model.balancer.weights)
    if balancer == "moco":
        assert sum(logs[f"{t}_weight"] for t in TASKS) == pytest.approx(1.0, abs=1e-3)
    else:
        assert int(model.balancer.clock.numpy()) == 2


@pytest.mark.parametrize("balancer,source,kwargs", CASES, ids=IDS)
def test_mixed_update_is_the_float32_update(balancer, source, kwargs):
    """Two steps (STCH's second past its warm-up): the balancer sees the losses and gradients
    without the loss scale (2^15), so the update matches float32 training's."""

    def update(policy):
        model = _model(policy, balancer, source, kwargs, keras.optimizers.SGD(1.0))
        model.train_on_batch(*_batch())
        before = [v.numpy() for v in model.network.trainable_variables]
        model.train_on_batch(*_batch())
        after = [v.numpy() for v in model.network.trainable_variables]
        return np.concatenate([(a - b).ravel() for a, b in zip(after, before)])

    full, mixed = update("float32"), update("mixed_float16")
    ratio = np.linalg.norm(mixed) / np.linalg.norm(full)
    assert 0.9 < ratio < 1.1, ratio
    assert np.dot(mixed, full) / (np.linalg.norm(mixed) * np.linalg.norm(full)) > 0.95


def test_overflowing_step_leaves_moco_state_unchanged():
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05), initial_scale=2.0**40)
    model = _model("mixed_float16", "moco", "shared", {}, opt)
    kept = [*model.network.trainable_variables, *model.balancer.weights]
    state = [v.numpy() for v in kept]
    model.fit(tf.data.Dataset.from_tensors(_batch(n=4)), shuffle=False, verbose=0)
    for a, v in zip(state, kept):
        np.testing.assert_array_equal(a, v.numpy(), err_msg=v.path)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert float(loss_scale(model.optimizer)) == 2.0**39


def test_auto_lambda_mixed_meta_step_is_the_float32_meta_step():
    """The bilevel path's second-order pass is loss-scaled and scaled back: once the dynamic
    scale stops overflowing (skipped steps leave the meta-weights alone), the meta step of mixed
    float16 training is float32 training's."""

    def meta_step(policy):
        model = _model(policy, "auto_lambda", "auto", {"optimizer": "sgd", "lr": 10.0})
        for _ in range(4):  # the first steps may overflow at the initial scale, 2^15
            model.train_on_batch(*_batch(n=4))
            if int(model.optimizer.iterations.numpy()):
                break
            np.testing.assert_array_equal(model.balancer.meta_weights.numpy(), np.float32(0.1))
        assert int(model.optimizer.iterations.numpy()) == 1
        return model.balancer.meta_weights.numpy() - 0.1

    full, mixed = meta_step("float32"), meta_step("mixed_float16")
    assert np.all(np.abs(full) > 1e-6), full
    np.testing.assert_allclose(mixed, full, rtol=0.05, atol=1e-6)
