"""Auto-Lambda on its own: the combined losses, the meta step, and the exact hypergradient of the
bilevel path on a tiny linear model against a NumPy computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training.gradient_paths import BilevelPath
from mtl_keras.training.precision import LossScaling
from tests.balancing.methods._loss import objective_and_grads, set_up
from tests.balancing.properties import Method


class _Squares:
    """The objective's task losses, for the path: each output's mean squared error."""

    def task_losses(self, y, outputs):
        per_task = [tf.reduce_mean(tf.square(outputs[t] - y[t])) for t in ("a", "b")]
        return per_task, {}


def _linear_path(balancer, w0):
    """A linear network ``{a: x W_a, b: x W_b}`` (one (3, 2) kernel), squared-error tasks."""
    x = keras.Input((3,))
    dense = keras.layers.Dense(2, use_bias=False, name="shared")
    out = dense(x)
    network = keras.Model(x, {"a": out[:, :1], "b": out[:, 1:]})
    dense.kernel.assign(w0)
    balancer.setup(["a", "b"])
    path = BilevelPath(network, None, balancer, _Squares(), {}, False, "sum")
    return path, network


def _numpy_hypergradient(w0, lam, alpha, x_tr, y_tr, x_val, y_val, primary):
    """``-alpha g_i . grad L_P(theta')`` for the column-wise linear squared-error tasks."""
    n_tr, n_val = len(x_tr), len(x_val)
    g = [np.zeros_like(w0) for _ in range(2)]  # per-task gradients at theta
    for i in range(2):
        g[i][:, i] = 2.0 / n_tr * x_tr.T @ (x_tr @ w0[:, i] - y_tr[:, i])
    ahead = w0 - alpha * (lam[0] * g[0] + lam[1] * g[1])
    v = np.zeros_like(w0)
    for i in range(2):
        v[:, i] = primary[i] * 2.0 / n_val * x_val.T @ (x_val @ ahead[:, i] - y_val[:, i])
    return np.array([-alpha * np.sum(g[i] * v) for i in range(2)])


class TestAutoLambda(Method):
    name = "auto_lambda"
    variants = ({"optimizer": "sgd", "weighting": "softmax", "primary": ["a"]},)

    def test_combine_is_the_weighted_sum(self):
        b = set_up("auto_lambda", init=0.3)
        value, w, (d_losses,) = objective_and_grads(b, [2.0, 5.0], [])
        np.testing.assert_allclose(value, 0.3 * 7.0, rtol=1e-6)
        np.testing.assert_allclose(w, [0.3, 0.3], rtol=1e-6)
        np.testing.assert_allclose(d_losses, [0.3, 0.3], rtol=1e-6)
        soft = set_up("auto_lambda", weighting="softmax")
        np.testing.assert_allclose(objective_and_grads(soft, [2.0, 5.0], [])[1], [0.5, 0.5])

    def test_meta_steps_sgd_and_adam(self):
        grad = tf.constant([0.5, -2.0])
        sgd = set_up("auto_lambda", optimizer="sgd", lr=0.1)
        sgd.apply_hypergradient(grad)
        np.testing.assert_allclose(sgd.meta_weights, [0.1 - 0.05, 0.1 + 0.2], rtol=1e-6)
        adam = set_up("auto_lambda", lr=1e-2)
        adam.apply_hypergradient(grad)  # Adam's first step: lr * sign(grad), up to epsilon
        np.testing.assert_allclose(adam.meta_weights, [0.09, 0.11], rtol=1e-5)
        adam.apply_hypergradient(grad)
        np.testing.assert_allclose(adam.meta_weights, [0.08, 0.12], rtol=1e-5)
        assert int(adam.meta_steps) == 2 and not adam.meta_weights.trainable

    @pytest.mark.parametrize(
        "kwargs, primary",
        [({}, [1.0, 1.0]), ({"primary": ["a"], "virtual_lr": 0.3}, [1.0, 0.0])],
    )
    def test_exact_hypergradient_of_a_linear_model(self, kwargs, primary):
        rng = np.random.default_rng(0)
        w0 = rng.normal(size=(3, 2)).astype(np.float32)
        x_tr, x_val = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
        y_tr, y_val = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
        b = balancing.get("auto_lambda", init=0.7, **kwargs)
        path, _ = _linear_path(b, w0)
        b.meta_weights.assign([0.7, 1.3])
        as_tf = [tf.constant(v, tf.float32) for v in (x_tr, y_tr, x_val, y_val)]
        labels = [{"a": y[:, :1], "b": y[:, 1:]} for y in (as_tf[1], as_tf[3])]
        grad, val_losses, _ = path.hypergradient(
            as_tf[0], labels[0], as_tf[2], labels[1], LossScaling(None)
        )
        expected = _numpy_hypergradient(
            w0, [0.7, 1.3], b.virtual_lr, x_tr, y_tr, x_val, y_val, primary
        )
        np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
        assert val_losses.shape == (2,)

    def test_a_task_whose_gradient_helps_the_held_out_loss_gains_weight(self):
        """Task a's training data is its held-out data; task b's targets are noise on the
        training batch only: lambda_a grows, lambda_b does not."""
        rng = np.random.default_rng(1)
        w0 = np.zeros((3, 2), np.float32)
        x = tf.constant(rng.normal(size=(8, 3)), tf.float32)
        w_true = rng.normal(size=(3, 1))
        clean = tf.constant(x.numpy() @ w_true, tf.float32)
        noise = tf.constant(rng.normal(size=(8, 1)) * 3, tf.float32)
        b = balancing.get("auto_lambda", optimizer="sgd", lr=1.0, primary=["a"])
        path, _ = _linear_path(b, w0)
        grad, _, _ = path.hypergradient(
            x, {"a": clean, "b": noise}, x, {"a": clean, "b": clean}, LossScaling(None)
        )
        b.apply_hypergradient(grad)
        assert float(grad[0]) < 0.0 and float(b.meta_weights[0]) > 0.1
        np.testing.assert_allclose(grad[1], 0.0, atol=1e-6)  # b's head does not touch a's loss

    def test_refusals_and_the_declaration(self):
        b = balancing.get("autol")
        assert type(b) is balancing.AutoLambda and b.level == "loss"
        assert b.needs.paths == {"bilevel": "lookahead"} and b.needs.batches == 2
        with pytest.raises(ValueError, match="primary must name some of the tasks"):
            set_up("auto_lambda", primary=["z"])
        with pytest.raises(ValueError, match="weighting must be one of"):
            balancing.get("auto_lambda", weighting="sigmoid")
        with pytest.raises(ValueError, match="lr must be > 0"):
            balancing.get("auto_lambda", lr=0.0)
        for bad in (0.0, -1, "adam", True):
            with pytest.raises(ValueError, match='virtual_lr must be > 0 or "optimizer"'):
                balancing.get("auto_lambda", virtual_lr=bad)
        assert balancing.get("auto_lambda", virtual_lr="optimizer").get_config()["virtual_lr"] == (
            "optimizer"
        )
        with pytest.raises(ValueError, match="bilevel path only, on 2 mini-batches"):
            balancing.base.Needs({"bilevel": "lookahead"}, batches=3)
