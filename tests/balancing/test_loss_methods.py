"""Loss-level balancers against hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing

STEP = tf.constant(0, tf.int64)


def setup(name, tasks=("a", "b"), **kwargs):
    b = balancing.get(name, **kwargs)
    b.setup(list(tasks))
    return b


def objective_and_grads(b, losses, variables):
    losses = tf.constant(losses, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(losses)
        objective, w = b.combine(losses, losses, STEP)
    grads = tape.gradient(objective, [losses, *variables])
    return float(objective), w.numpy(), [g.numpy() for g in grads]


def test_uncertainty_objective_and_gradient_wrt_log_variance():
    b = setup("uncertainty", task_types={"b": "classification"})
    b.log_variances.assign([0.5, -1.0])
    value, w, (d_losses, d_s) = objective_and_grads(b, [2.0, 3.0], [b.log_variances])
    s, losses, k = np.array([0.5, -1.0]), np.array([2.0, 3.0]), np.array([0.5, 1.0])
    np.testing.assert_allclose(value, np.sum(k * np.exp(-s) * losses + s / 2), rtol=1e-6)
    np.testing.assert_allclose(w, k * np.exp(-s), rtol=1e-6)
    np.testing.assert_allclose(d_losses, k * np.exp(-s), rtol=1e-6)
    np.testing.assert_allclose(d_s, 0.5 - k * np.exp(-s) * losses, rtol=1e-6)
    assert b.log_variances.trainable  # stepped by the model's optimizer
    with pytest.raises(ValueError, match="unknown tasks \\['z'\\]"):
        setup("uncertainty", task_types={"z": "regression"})


def test_uncertainty_optimum_is_log_loss():
    b = setup("uncertainty")
    b.log_variances.assign(np.log([2.0, 3.0]))  # s* = log L for regression tasks
    _, _, (_, d_s) = objective_and_grads(b, [2.0, 3.0], [b.log_variances])
    np.testing.assert_allclose(d_s, [0.0, 0.0], atol=1e-6)


def test_imtl_l_gradient_wrt_scale():
    b = setup("imtl_l")
    b.log_scales.assign([0.0, np.log(0.5)])
    value, w, (_, d_s) = objective_and_grads(b, [2.0, 2.0], [b.log_scales])
    np.testing.assert_allclose(value, 2.0 + 1.0 - np.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(w, [1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(d_s, [2.0 - 1.0, 1.0 - 1.0], atol=1e-6)  # exp(s) L - 1


def test_gls_is_the_geometric_mean_with_its_gradient():
    b = setup("gls", tasks=("a", "b", "c"))
    value, w, (d_losses,) = objective_and_grads(b, [1.0, 4.0, 2.0], [])
    np.testing.assert_allclose(value, 2.0, rtol=1e-6)  # (1 * 4 * 2)^(1/3)
    np.testing.assert_allclose(d_losses, 2.0 / (3 * np.array([1.0, 4.0, 2.0])), rtol=1e-6)
    many = setup("gls", tasks=[f"t{i}" for i in range(300)])
    big = tf.fill([300], 1e3)
    np.testing.assert_allclose(float(many.combine(big, big, STEP)[0]), 1e3, rtol=1e-5)


def test_dwa_epoch_form_after_two_epochs():
    b = setup("dwa")
    for losses in ([4.0, 2.0], [2.0, 2.0]):  # epoch 1 mean: (3, 2)
        assert np.all(b.combine(tf.ones(2), tf.constant(losses), STEP)[1].numpy() == 1.0)
    b.on_epoch_end()
    b.combine(tf.ones(2), tf.constant([1.5, 2.0]), STEP)  # epoch 2 mean: (1.5, 2)
    b.on_epoch_end()
    _, w = b.combine(tf.constant([1.0, 1.0]), tf.constant([1.0, 1.0]), STEP)
    r = np.array([1.5 / 3.0, 2.0 / 2.0])
    np.testing.assert_allclose(w, 2 * np.exp(r / 2) / np.exp(r / 2).sum(), rtol=1e-6)
    b.on_epoch_end()  # epoch 3 mean (1, 1): ratios (1/1.5, 1/2)
    objective, w = b.combine(tf.constant([1.0, 3.0]), tf.constant([1.0, 3.0]), STEP)
    r = np.array([1.0 / 1.5, 1.0 / 2.0])
    expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    np.testing.assert_allclose(float(objective), expected @ [1.0, 3.0], rtol=1e-6)


def test_dwa_epoch_end_without_steps_keeps_history():
    b = setup("dwa")
    b.on_epoch_end()
    assert int(b.epochs_seen) == 0


def test_dwa_window_form_and_mean_reduction():
    b = setup("dwa", mode="window", window=2, reduction="mean")
    history = [[4.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]]
    for i, losses in enumerate(history):
        objective, w = b.combine(tf.constant(losses), tf.constant(losses), STEP)
        if i < 3:
            np.testing.assert_array_equal(w, [1.0, 1.0])
    r = np.array([(2.0 + 1.0) / (4.0 + 2.0), (2.0 + 2.0) / (1.0 + 1.0)])
    expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    np.testing.assert_allclose(float(objective), expected @ [1.0, 2.0] / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="valid: epoch, window"):
        balancing.get("dwa", mode="steps")


def test_rlw_is_seeded_stateless_and_sums_to_one():
    b = setup("rlw", tasks=("a", "b", "c"), seed=7)
    w5 = b.combine(tf.ones(3), None, tf.constant(5, tf.int64))[1].numpy()
    again = setup("rlw", tasks=("a", "b", "c"), seed=7).combine(tf.ones(3), None, 5)[1].numpy()
    np.testing.assert_array_equal(w5, again)
    expected = tf.nn.softmax(tf.random.stateless_normal([3], seed=[7, 5])).numpy()
    np.testing.assert_allclose(w5, expected, rtol=1e-6)
    assert not np.allclose(w5, b.combine(tf.ones(3), None, 6)[1])
    uniform = setup("rlw", tasks=("a", "b", "c"), seed=7, distribution="uniform", scale="tasks")
    np.testing.assert_allclose(np.sum(uniform.combine(tf.ones(3), None, 5)[1]), 3.0, rtol=1e-6)


def test_dtp_metric_and_loss_kpis():
    b = setup("dtp", kpi="metric", gamma={"b": 2.0}, alpha=0.5)
    np.testing.assert_array_equal(b.combine(tf.ones(2), None, STEP)[1], [1.0, 1.0])
    b.observe_kpi([0.5, 0.9])
    b.observe_kpi([0.7, 0.5])  # moving average: (0.6, 0.7)
    k = np.array([0.6, 0.7])
    _, w = b.combine(tf.ones(2), None, STEP)
    np.testing.assert_allclose(w, -((1 - k) ** np.array([1.0, 2.0])) * np.log(k), rtol=1e-5)
    proxy = setup("dtp")
    _, w = proxy.combine(tf.ones(2), tf.constant([2.0, 5.0]), STEP)
    np.testing.assert_allclose(w, [1 - np.exp(-1)] * 2, rtol=1e-5)  # kpi = exp(-1) for both
    _, w = proxy.combine(tf.ones(2), tf.constant([1.0, 5.0]), STEP)
    k = 0.1 * np.exp(-np.array([0.5, 1.0])) + 0.9 * np.exp(-1.0)
    np.testing.assert_allclose(w, -(1 - k) * np.log(k), rtol=1e-5)
    assert w[0] < w[1]  # the task that improved gets less weight


def test_famo_weights_and_logit_update():
    b = setup("famo", gamma=0.0)
    losses = tf.constant([1.0, 3.0])
    objective, w = b.combine(losses, losses, STEP)
    np.testing.assert_allclose(w, [0.75, 0.25], rtol=1e-6)  # z_i / L_i normalised
    np.testing.assert_allclose(float(objective), 0.75 + 0.75, rtol=1e-6)
    # task a halved its loss, task b did not move: a's logit goes down by w_lr (Adam step 1)
    b.after_step(losses, tf.constant([0.5, 3.0]), STEP)
    np.testing.assert_allclose(b.logits.numpy(), [-0.025, 0.025], rtol=1e-4)
    _, w = b.combine(losses, losses, STEP)
    assert w[0] < 0.75
    assert b.needs_losses_after_step and not b.logits.trainable


def test_famo_gradient_matches_the_log_objective():
    """d/dtheta of sum z log(L)/c equals the returned linearised objective's gradient."""
    b = setup("famo")
    b.logits.assign([0.3, -0.2])
    losses = tf.Variable([1.5, 0.4])
    with tf.GradientTape(persistent=True) as tape:
        linear, _ = b.combine(losses, tf.stop_gradient(losses), STEP)
        z = tf.nn.softmax(b.logits)
        c = tf.stop_gradient(tf.reduce_sum(z / losses))
        log_form = tf.reduce_sum(z * tf.math.log(losses)) / c
    np.testing.assert_allclose(tape.gradient(linear, losses), tape.gradient(log_form, losses), 1e-5)
