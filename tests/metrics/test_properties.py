"""Properties every streaming metric must have: pooled streaming, graph mode, reset, config
round trip, per-image sample weights, and correct sums under MirroredStrategy on 2 CPUs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.metrics import DepthErrors, EdgeF, MeanIoU, NormalAngleErrors, SaliencyMaxF
from tests.utils import two_replicas

B, H, W = 4, 12, 16


def _semseg(rng):
    y = rng.integers(0, 4, (B, H, W, 1)).astype(np.uint8)
    y[rng.random(y.shape) < 0.1] = 255
    return y, rng.normal(size=(B, H, W, 4)).astype(np.float32)


def _depth(rng):
    y = rng.uniform(0.5, 5.0, (B, H, W, 1)).astype(np.float32)
    y[rng.random(y.shape) < 0.2] = 0.0
    return y, (y + rng.normal(0.0, 0.7, y.shape)).astype(np.float32)


def _normals(rng):
    y = rng.normal(size=(B, H, W, 3)).astype(np.float32)
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    y[rng.random((B, H, W)) < 0.2] = 0.0
    return y, (y + rng.normal(0.0, 0.5, y.shape)).astype(np.float32)


def _binary(rng):
    y = (rng.random((B, H, W, 1)) < 0.3).astype(np.float32)
    y[rng.random(y.shape) < 0.1] = 255.0
    return y, rng.random((B, H, W, 1)).astype(np.float32)


CASES = {
    "miou": (lambda: MeanIoU(4), _semseg),
    "depth": (DepthErrors, _depth),
    "normals": (NormalAngleErrors, _normals),
    "saliency": (lambda: SaliencyMaxF(beta2=0.3), _binary),
    "edges": (lambda: EdgeF(threshold=0.6, tolerance=1), _binary),
}


def _data(case, seed=0):
    return CASES[case][1](np.random.default_rng(seed))


def _result(metric):
    return {k: float(v) for k, v in metric.result().items()}


def _assert_same(a, b, rel=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=rel, abs=1e-6), k


@pytest.mark.parametrize("case", CASES)
def test_result_is_a_dict_of_float32_scalars(case):
    m = CASES[case][0]()
    for v in m.result().values():  # also before any update
        assert v.shape == () and v.dtype == tf.float32 and float(v) == 0.0
    m.update_state(*_data(case))
    assert all(np.isfinite(v) for v in _result(m).values())


@pytest.mark.parametrize("case", CASES)
def test_two_updates_equal_one_update_on_the_concatenation(case):
    y, p = _data(case)
    once, twice = CASES[case][0](), CASES[case][0]()
    once.update_state(y, p)
    twice.update_state(y[:1], p[:1])
    twice.update_state(y[1:], p[1:])
    _assert_same(_result(once), _result(twice))


@pytest.mark.parametrize("case", CASES)
def test_update_inside_tf_function_matches_eager(case):
    y, p = _data(case)
    eager, graph = CASES[case][0](), CASES[case][0]()
    eager.update_state(y, p)

    @tf.function
    def step(y, p):
        graph.update_state(y, p)
        return graph.result()

    step(tf.constant(y[:2]), tf.constant(p[:2]))
    logs = step(tf.constant(y[2:]), tf.constant(p[2:]))
    _assert_same(_result(eager), {k: float(v) for k, v in logs.items()})


@pytest.mark.parametrize("case", CASES)
def test_reset_state_forgets_everything(case):
    y, p = _data(case)
    fresh, m = CASES[case][0](), CASES[case][0]()
    m.update_state(*_data(case, seed=1))
    m.reset_state()
    assert all(v == 0.0 for v in _result(m).values())
    m.update_state(y, p)
    fresh.update_state(y, p)
    _assert_same(_result(fresh), _result(m))


@pytest.mark.parametrize("case", CASES)
def test_zero_image_weight_drops_the_image(case):
    y, p = _data(case)
    weighted, subset = CASES[case][0](), CASES[case][0]()
    weighted.update_state(y, p, sample_weight=np.array([1.0, 0.0, 1.0, 0.0]))
    subset.update_state(y[::2], p[::2])
    _assert_same(_result(subset), _result(weighted))


@pytest.mark.parametrize("case", CASES)
def test_config_round_trip(case):
    m = CASES[case][0]()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert type(restored) is type(m)
    assert restored.get_config() == m.get_config()
    y, p = _data(case)
    m.update_state(y, p)
    restored.update_state(y, p)
    _assert_same(_result(m), _result(restored))


@pytest.mark.parametrize("case", CASES)
def test_mirrored_strategy_sums_replica_states(case):
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("needs 2 logical CPU devices (configured in tests/conftest.py)")
    y, p = _data(case)
    single = CASES[case][0]()
    single.update_state(y, p)

    strategy = two_replicas()
    with strategy.scope():
        m = CASES[case][0]()
    dataset = tf.data.Dataset.from_tensor_slices((y, p)).batch(B // 2)  # 1 image per replica

    @tf.function
    def step(batch):
        strategy.run(m.update_state, args=batch)

    for batch in strategy.experimental_distribute_dataset(dataset):
        step(batch)
    _assert_same(_result(single), _result(m))
    m.reset_state()
    assert all(v == 0.0 for v in _result(m).values())
