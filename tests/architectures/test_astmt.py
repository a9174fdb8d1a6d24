"""ASTMT: task-conditioned passes with shared weights, zero-initialised adapters, the twice
differentiable resize, gradient reversal, and a reference adversarial step on loss gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.architectures import build_astmt
from mtl_keras.architectures.astmt import (
    DifferentiableResizeLike,
    GradientReversal,
    TaskFeatures,
    build_task_discriminator,
    discriminator_loss,
    task_features,
    task_network,
)
from mtl_keras.heads import ResizeLike
from tests.architectures.tiny import TINY, raw_images, tiny_architecture
from tests.utils import tiny_arrays, tiny_specs


def _bilinear_matrix(out_size, in_size):
    """1-D bilinear weights with half-pixel centres, written out independently."""
    a = np.zeros((out_size, in_size))
    for o in range(out_size):
        c = min(max((o + 0.5) * in_size / out_size - 0.5, 0.0), in_size - 1)
        lo = int(np.floor(c))
        hi = min(lo + 1, in_size - 1)
        a[o, lo] += 1 - (c - lo)
        a[o, hi] += c - lo
    return a


def test_task_passes_share_every_encoder_and_decoder_weight():
    network = tiny_architecture("astmt")
    conv = network.get_layer("stage2_block1_conv1")
    assert len([n for n in conv._inbound_nodes if n.operation is conv]) >= 2  # one call per task
    adapters = [v for v in network.trainable_variables if "_adapter/" in v.path]
    assert adapters and all(not np.any(v.numpy()) for v in adapters)  # zero-initialised (RA)
    assert network.get_layer("semseg_stage3_block1_se_fc2").kernel.shape[-1] == 32
    assert {layer.task for layer in network.layers if isinstance(layer, TaskFeatures)} == {
        "semseg",
        "depth",
    }


def test_single_task_path_equals_the_full_model():
    network = tiny_architecture("astmt")
    x = raw_images()
    single = task_network(network, "depth")
    assert len(single.layers) < len(network.layers)
    np.testing.assert_allclose(
        np.asarray(single(x)["depth"]), np.asarray(network(x)["depth"]), rtol=1e-5, atol=1e-6
    )


def test_resize_gradient_is_the_transposed_interpolation_and_differentiates_again():
    rng = np.random.default_rng(0)
    x = tf.Variable(rng.normal(size=(1, 3, 4, 2)).astype("float32"))
    reference = tf.zeros([1, 7, 5, 1])
    a_h, a_w = _bilinear_matrix(7, 3), _bilinear_matrix(5, 4)
    resize = DifferentiableResizeLike()
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            y = resize([x, reference])
            loss = 0.5 * tf.reduce_sum(y**2)
        g = inner.gradient(loss, x)
        second = tf.reduce_sum(g * tf.constant(rng.normal(size=(1, 3, 4, 2)), tf.float32))
    expected_y = np.einsum("Hh,bhwc,Ww->bHWc", a_h, x.numpy(), a_w)
    np.testing.assert_allclose(y.numpy(), expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.numpy(), ResizeLike()([x, reference]).numpy(), atol=1e-6)
    # dL/dx = A^T A x per axis; its derivative along v is A^T A v: non-zero, unlike TF's resize
    np.testing.assert_allclose(
        g.numpy(), np.einsum("Hh,bHWc,Ww->bhwc", a_h, expected_y, a_w), rtol=1e-5, atol=1e-6
    )
    assert np.abs(outer.gradient(second, x).numpy()).max() > 0


def test_gradient_reversal():
    x = tf.constant([1.0, -2.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(GradientReversal(scale=0.3)(x) * tf.constant([2.0, 5.0]))
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [-0.6, -1.5], rtol=1e-6)
    np.testing.assert_allclose(y.numpy(), -8.0)


def test_reference_adversarial_step_reverses_only_the_network_gradient():
    """The step MultiTaskModel needs (docs/architectures.md): per-task loss gradients with respect
    to the task features (inner tape), the discriminator's loss on them, differentiated again (outer
    tape). Flipping the reversal flips the network's adversarial gradient, reaches the encoder
    through the second-order path, and leaves the discriminator's gradient unchanged."""
    tasks = ("semseg", "normals")
    specs = tiny_specs(tasks)
    keras.utils.set_random_seed(0)
    network = build_astmt(list(specs.values()), **TINY)
    arrays = tiny_arrays(tasks, n=2)
    x, y = tf.constant(arrays["image"], tf.float32), {t: tf.constant(arrays[t]) for t in tasks}
    forward = keras.Model(network.input, {"out": network.output, "feat": task_features(network)})
    discriminator = build_task_discriminator(8, len(tasks))
    variables = network.trainable_variables + discriminator.trainable_variables

    def adversarial_gradients(reversal):
        discriminator.get_layer("reversal").scale = reversal
        with tf.GradientTape() as outer:
            with tf.GradientTape(persistent=True) as inner:
                out = forward(x, training=False)
                losses = {t: specs[t].loss(y[t], out["out"][t]) for t in tasks}
            grads = {t: inner.gradient(losses[t], out["feat"][t]) for t in tasks}
            loss = discriminator_loss(discriminator, grads, tasks)
        return [np.asarray(g) for g in outer.gradient(loss, variables)]

    plus, minus = adversarial_gradients(1.0), adversarial_gradients(-1.0)
    n = len(network.trainable_variables)
    for g_plus, g_minus in zip(plus[:n], minus[:n], strict=True):
        np.testing.assert_allclose(g_plus, -g_minus, rtol=1e-5, atol=1e-8)
    for g_plus, g_minus in zip(plus[n:], minus[n:], strict=True):
        np.testing.assert_allclose(g_plus, g_minus, rtol=1e-5, atol=1e-8)
    reached = {v.path for v, g in zip(network.trainable_variables, plus) if np.abs(g).max() > 0}
    assert "stem_conv/kernel" in reached  # the encoder, through the second-order path


def test_backbone_without_residual_blocks_is_rejected():
    image = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, strides=4, padding="same", name="c")(image)
    fake = keras.Model(image, {f"P{i}": features for i in range(2, 6)}, name="plain")
    with pytest.raises(ValueError, match=r"backbone 'plain' has none.*resnet18"):
        build_astmt(["depth"], backbone=fake, head="conv")
