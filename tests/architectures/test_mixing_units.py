"""The mixing units of the soft-sharing networks against hand-computed values, and the learning-rate
multiplier re-parametrisation under SGD."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.architectures.cross_stitch import CrossStitchUnit
from mtl_keras.architectures.nddr import NDDRFusion
from mtl_keras.architectures.sluice import LayerStitch, SluiceUnit
from tests.architectures.tiny import tiny_architecture


def _features(n_tasks=3, channels=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, 3, 5, channels)).astype("float32") for _ in range(n_tasks)]


def test_cross_stitch_is_a_per_channel_linear_combination():
    xs = _features()
    unit = CrossStitchUnit(alpha=0.9, beta=0.1)
    unit(xs)  # build
    np.testing.assert_allclose(
        unit.stitch.numpy()[:, :, 0], [[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]]
    )
    a = np.random.default_rng(1).normal(size=(3, 3, 4)).astype("float32")
    unit.stitch.assign(a)
    out = [np.asarray(y) for y in unit(xs)]
    for i in range(3):
        expected = sum(a[i, j] * xs[j] for j in range(3))  # a[i, j] broadcasts over channels
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)


def test_nddr_fusion_starts_as_weighted_identity_and_is_a_1x1_conv():
    xs = _features(n_tasks=2, channels=3)
    fusion = NDDRFusion(alpha=0.8, beta=0.05)
    y1, y2 = (np.asarray(y) for y in fusion(xs))
    np.testing.assert_allclose(y1, 0.8 * xs[0] + 0.05 * xs[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y2, 0.05 * xs[0] + 0.8 * xs[1], rtol=1e-5, atol=1e-6)
    kernel = np.random.default_rng(2).normal(size=(2, 6, 3)).astype("float32")
    fusion.kernel.assign(kernel)
    concat = np.concatenate(xs, axis=-1)
    for i, y in enumerate(fusion(xs)):
        np.testing.assert_allclose(np.asarray(y), concat @ kernel[i], rtol=1e-4, atol=1e-5)


def test_sluice_unit_mixes_subspaces_and_penalises_their_overlap():
    xs = _features(n_tasks=2, channels=4)
    unit = SluiceUnit(subspaces=2, self_weight=0.7, orthogonality=0.5)
    out = [np.asarray(y) for y in unit(xs)]
    alpha = unit.alpha.numpy()
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-6)  # rows: 0.7 + 3 * 0.1
    np.testing.assert_allclose(np.diag(alpha), 0.7, rtol=1e-6)
    parts = [p for x in xs for p in (x[..., :2], x[..., 2:])]  # (task, subspace) order
    mixed = [sum(alpha[r, s] * parts[s] for s in range(4)) for r in range(4)]
    np.testing.assert_allclose(out[0], np.concatenate(mixed[:2], -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], np.concatenate(mixed[2:], -1), rtol=1e-5, atol=1e-5)
    # ||X_1^T X_2 / N||_F^2 per task, N = 2 * 3 * 5 pixels
    expected = 0.0
    for x in xs:
        flat = x.reshape(-1, 4)
        expected += np.sum((flat[:, :2].T @ flat[:, 2:] / 30) ** 2)
    assert len(unit.losses) == 1
    np.testing.assert_allclose(float(unit.losses[0]), 0.5 * expected, rtol=1e-5)


def test_layer_stitch_weights_the_last_layer_most():
    hs = _features(n_tasks=4, channels=2)
    stitch = LayerStitch(last_weight=0.7)
    out = np.asarray(stitch(hs))
    np.testing.assert_allclose(stitch.beta.numpy(), [0.1, 0.1, 0.1, 0.7], rtol=1e-6)
    np.testing.assert_allclose(out, 0.1 * (hs[0] + hs[1] + hs[2]) + 0.7 * hs[3], rtol=1e-5)


@pytest.mark.parametrize("unit_class", [CrossStitchUnit, NDDRFusion])
def test_lr_multiplier_scales_the_sgd_step(unit_class):
    """Stored ``v = w / sqrt(m)``, used ``w = sqrt(m) v``: one SGD step moves ``w`` by ``m`` times
    the plain step, and the forward pass is the same."""
    xs = _features(n_tasks=2, channels=3)
    target = np.random.default_rng(3).normal(size=xs[0].shape).astype("float32")
    steps = {}
    for m in (1.0, 100.0):
        unit = unit_class(0.9, 0.1, lr_multiplier=m)
        optimizer = keras.optimizers.SGD(0.01)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(unit(xs)[0] * target)
        variable = unit.trainable_variables[0]
        before = variable.numpy() * np.sqrt(m)  # the effective weight w
        optimizer.apply([tape.gradient(loss, variable)], [variable])
        steps[m] = (before, variable.numpy() * np.sqrt(m) - before)
    np.testing.assert_allclose(steps[1.0][0], steps[100.0][0], rtol=1e-6)  # same initial w
    np.testing.assert_allclose(steps[100.0][1], 100 * steps[1.0][1], rtol=1e-4, atol=1e-7)


def test_survey_placement_of_units():
    cross = tiny_architecture("cross_stitch")
    assert [layer.name for layer in cross.layers if isinstance(layer, CrossStitchUnit)] == [
        f"cross_stitch_stage{s}" for s in range(1, 5)
    ]
    nddr = tiny_architecture("nddr_cnn")
    assert [layer.name for layer in nddr.layers if isinstance(layer, NDDRFusion)] == [
        "nddr_stem",
        *(f"nddr_stage{s}" for s in range(1, 5)),
    ]
    assert nddr.get_layer("nddr_stage2_depth_bn").momentum == 0.95  # PyTorch momentum 0.05
    assert nddr.get_layer("nddr_stage4").lr_multiplier == 100.0
    sluice = tiny_architecture("sluice")
    assert sluice.get_layer("semseg_layer_stitch").beta.shape == (4,)
    assert sluice.get_layer("semseg_skip_stage1_conv").kernel.shape == (1, 1, 8, 64)
