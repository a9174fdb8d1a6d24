"""ASTMT: task-conditioned passes with shared weights, zero-initialised adapters, the twice
differentiable resize, gradient reversal, a reference adversarial step on loss gradients, and the
adversarial trainer (mtl_keras.training.adversarial)."""

import dataclasses

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
from mtl_keras.training import building
from mtl_keras.training.adversarial import AdversarialMultiTaskModel, reversal_schedule
from mtl_keras.training.precision import precision_policy
from mtl_keras.training.recipe import Recipe
from tests.architectures.tiny import TASKS, TINY, raw_images, tiny_architecture
from tests.utils import tiny_arrays, tiny_network, tiny_specs, two_replicas


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
    # a fresh network: other files of the same worker train the cached one
    network = tiny_architecture.__wrapped__("astmt")
    conv = network.get_layer("stage2_block1_conv1")
    assert len([n for n in conv._inbound_nodes if n.operation is conv]) >= 2  # one call per task
    adapters = [v for v in network.trainable_variables if "_adapter/" in v.path]
    assert adapters and all(not np.any(v.numpy()) for v in adapters)  # zero-initialised (RA)
    assert network.get_layer("semseg_stage3_block1_se_fc2").kernel.shape[-1] == 32
    assert {layer.task for layer in network.layers if isinstance(layer, TaskFeatures)} == {
        "semseg",
        "depth",
    }


def test_batch_norm_has_one_copy_per_task_starting_from_the_backbones_weights():
    from mtl_keras import backbones

    keras.utils.set_random_seed(0)
    bb = backbones.get(TINY["backbone"], **TINY["backbone_kwargs"])
    shared = bb.get_layer("stage2_block1_bn1")
    pretrained = np.random.default_rng(0).uniform(0.5, 2.0, shared.moving_variance.shape)
    pretrained = pretrained.astype("float32")
    shared.moving_variance.assign(pretrained)
    kwargs = {k: v for k, v in TINY.items() if k not in ("backbone", "backbone_kwargs")}
    network = build_astmt(TASKS, backbone=bb, **kwargs)
    names = {layer.name for layer in network.layers}
    assert "stage2_block1_bn1" not in names and "stem_bn" not in names
    for task in TASKS:
        copy = network.get_layer(f"{task}_stage2_block1_bn1")
        np.testing.assert_array_equal(copy.moving_variance.numpy(), pretrained)
    decoder_norms = [n for n in names if n.startswith("semseg_decoder") and "bn" in n]
    assert decoder_norms, "the decoder's batch norms are per task too"
    # each pass normalises, and updates the statistics, with its own task's copy
    network(raw_images(), training=True)
    last = [n for n in names if n.startswith("semseg_stage4_") and n.endswith("bn2")][-1]
    a = network.get_layer(last).moving_mean.numpy()
    b = network.get_layer(last.replace("semseg_", "depth_", 1)).moving_mean.numpy()
    assert not np.allclose(a, b)
    one = build_astmt(TASKS, backbone=bb, task_norm=False, **kwargs).get_layer("stage2_block1_bn1")
    assert len([n for n in one._inbound_nodes if n.operation is one]) >= 2  # one call per task


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


# ---------------------------------------------------------------------- the adversarial trainer
ADV_TASKS = ("semseg", "depth")


def _adversarial_model(seed=0, balancer="fixed", **kwargs):
    """The tiny ASTMT in the adversarial trainer, run eagerly (tracing the second-order step
    costs far more than running it on these sizes)."""
    keras.utils.set_random_seed(seed)
    specs = tiny_specs(ADV_TASKS)
    network = build_astmt(list(specs.values()), **TINY)
    model = AdversarialMultiTaskModel(network, list(specs.values()), balancer, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.05), run_eagerly=True)
    return model


def _adversarial_data(n=4, batch=2):
    arrays = tiny_arrays(ADV_TASKS, n=n)
    labels = {t: arrays[t] for t in ADV_TASKS}
    return tf.data.Dataset.from_tensor_slices((arrays["image"], labels)).batch(batch)


def test_adversarial_fit_trains_the_discriminator_and_logs_it():
    model = _adversarial_model(adversarial_weight=1.0, reversal_steps=4)
    assert {id(v) for v in model.discriminator.trainable_variables} <= {
        id(v) for v in model.trainable_variables
    }
    before = [v.numpy() for v in model.discriminator.trainable_variables]
    logs = model.fit(_adversarial_data(), epochs=1, verbose=0, shuffle=False).history
    assert int(model.optimizer.iterations.numpy()) == 2
    assert np.isfinite(logs["discriminator_loss"][-1]) and logs["discriminator_loss"][-1] > 0
    assert 0.0 <= logs["discriminator_accuracy"][-1] <= 1.0
    after = model.discriminator.trainable_variables
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after, strict=True))
    assert "discriminator_loss" not in model.evaluate(
        _adversarial_data(), return_dict=True, verbose=0
    )


def test_adversarial_gradient_is_reversed_for_the_network_only():
    """On a fixed batch: with reversal lambda the network's gradient of the adversarial term is
    -lambda times its gradient without reversal (reversal scale -1: identity); the
    discriminator's is unchanged; the term reaches the encoder through the second-order path and
    equals the reference formulation (an inner tape around the whole forward pass)."""
    lam = 0.3
    model = _adversarial_model(discriminator_kwargs={"reversal": lam})
    arrays = tiny_arrays(ADV_TASKS, n=2)
    x = tf.constant(arrays["image"], tf.float32)
    y = {t: tf.constant(arrays[t]) for t in ADV_TASKS}
    net_vars = model.network.trainable_variables
    variables = net_vars + model.discriminator.trainable_variables

    def gradients(reversal):
        model.discriminator.get_layer("reversal").scale = reversal
        with tf.GradientTape() as tape:
            loss, _ = model.adversarial_terms(x, y, training=False)
        return float(loss), [np.asarray(g) for g in tape.gradient(loss, variables)]

    loss_rev, rev = gradients(lam)
    loss_plain, plain = gradients(-1.0)
    assert loss_rev == loss_plain
    n = len(net_vars)
    for g_rev, g_plain in zip(rev[:n], plain[:n], strict=True):
        np.testing.assert_allclose(g_rev, -lam * g_plain, rtol=1e-5, atol=1e-9)
    for g_rev, g_plain in zip(rev[n:], plain[n:], strict=True):
        np.testing.assert_allclose(g_rev, g_plain, rtol=1e-5, atol=1e-9)
    reached = {v.path for v, g in zip(net_vars, plain) if np.abs(g).max() > 0}
    assert "stem_conv/kernel" in reached

    specs = model.tasks  # the reference: differentiate the whole forward pass
    forward = keras.Model(
        model.network.input, {"out": model.network.output, "feat": task_features(model.network)}
    )
    with tf.GradientTape() as outer:
        with tf.GradientTape(persistent=True) as inner:
            out = forward(x, training=False)
            losses = {t: specs[t].loss(y[t], out["out"][t]) for t in ADV_TASKS}
        grads = {t: inner.gradient(losses[t], out["feat"][t]) for t in ADV_TASKS}
        reference = discriminator_loss(model.discriminator, grads, ADV_TASKS)
    np.testing.assert_allclose(float(reference), loss_plain, rtol=1e-5)
    for g_ref, g in zip(outer.gradient(reference, variables), plain, strict=True):
        np.testing.assert_allclose(np.asarray(g_ref), g, rtol=1e-4, atol=1e-8)


def test_adversarial_trainer_state_round_trip(tmp_path):
    model = _adversarial_model()
    path = str(tmp_path / "trainer.weights.h5")
    model.save_weights(path)
    fresh = _adversarial_model(seed=1)
    assert not np.array_equal(
        fresh.discriminator.weights[0].numpy(), model.discriminator.weights[0].numpy()
    )
    fresh.load_weights(path)
    assert len(fresh.weights) == len(model.weights)
    for a, b in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_adversarial_step_on_two_replicas_equals_one_device():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py)")
    data = _adversarial_data(n=4, batch=4)

    def one_step(strategy):
        with strategy.scope():
            model = _adversarial_model(
                adversarial_weight=1.0, discriminator_kwargs={"reversal": 0.5}
            )
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        return [v.numpy() for v in model.trainable_variables]

    single = one_step(tf.distribute.get_strategy())
    for a, b in zip(single, one_step(two_replicas()), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_adversarial_trainer_rejects_gradient_balancers_and_unmarked_networks():
    with pytest.raises(ValueError, match=r"loss-level balancers only; 'mgda' balances"):
        _adversarial_model(balancer="mgda")
    specs = list(tiny_specs(ADV_TASKS).values())
    with pytest.raises(ValueError, match=r"no TaskFeatures marker.*architecture='astmt'"):
        AdversarialMultiTaskModel(tiny_network(ADV_TASKS), specs)


def test_reversal_schedule_ramps_from_zero_to_one():
    values = [float(reversal_schedule(s, 10)) for s in (-1, 0, 4, 9, 50)]
    assert values[0] == 0.0 and values[-1] == values[-2]
    assert values == sorted(values) and values[-1] == pytest.approx(1.0, abs=1e-4)
    assert values[2] == pytest.approx(2 / (1 + np.exp(-5.0)) - 1)


def test_adversarial_mixed_float16_step_is_applied():
    """The float32 tail and discriminator keep the inner gradients out of float16; the outer
    backward pass is loss-scaled (Keras's initial 2^15) and the step is not skipped."""
    with precision_policy("mixed_float16"):
        model = _adversarial_model(adversarial_weight=1.0)
    assert model.network.get_layer("stage1_block1_conv1").compute_dtype == "float16"
    assert model.network.output["depth"].dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    arrays = tiny_arrays(ADV_TASKS, n=2)
    x, y = tf.constant(arrays["image"]), {t: tf.constant(arrays[t]) for t in ADV_TASKS}
    logs = model.train_on_batch(x, y, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert int(model.optimizer.iterations.numpy()) == 1


def test_recipe_adversarial_weight_selects_the_adversarial_trainer():
    recipe = Recipe(
        name="adv",
        tasks=ADV_TASKS,
        image_size=(32, 32),
        architecture="astmt",
        backbone="resnet10",
        backbone_kwargs={"width": 8, "output_stride": 8},
        head="conv",
        head_kwargs={"filters": 8, "num_convs": 1},
        adversarial_weight=0.01,
        jit_compile=False,
    )
    model = building.build_model(recipe, building.task_specs(recipe), steps=50)
    assert isinstance(model, AdversarialMultiTaskModel)
    assert (model.adversarial_weight, model.reversal_steps) == (0.01, 50)
    assert model.optimizer.built
    plain = dataclasses.replace(recipe, architecture="hard_sharing")
    with pytest.raises(ValueError, match=r"adversarial_weight=0.01 needs.*'hard_sharing'"):
        building.build_model(plain, building.task_specs(plain), steps=50)
    with pytest.raises(ValueError, match="adversarial_weight must be >= 0"):
        dataclasses.replace(recipe, adversarial_weight=-1.0)
