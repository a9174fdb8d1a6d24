"""Auto-Lambda: task weights meta-learned by a look-ahead step on a held-out mini-batch."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer, Needs

WEIGHTINGS = ("raw", "softmax")
OPTIMIZERS = ("adam", "sgd")
#: PyTorch's Adam defaults, the meta-optimiser of the official code
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8


@keras.saving.register_keras_serializable(package="mtl_keras")
class AutoLambda(LossBalancer):
    """Liu, Johns & Davison, "Auto-Lambda: Disentangling Dynamic Task Relationships", TMLR 2022.

    The model minimises ``sum_i lambda_i L_i(train)``; ``lambda`` minimises the primary tasks'
    loss after a virtual SGD step, ``min_lambda sum_{i in P} L_i(val; theta')`` with
    ``theta' = theta - alpha grad_theta sum_i lambda_i L_i(train; theta)``. The bilevel gradient
    path (``mtl_keras.training.gradient_paths.bilevel``) takes each step's batch as two strided
    mini-batches, a training one and a held-out one from the same training data (the official
    code's "val" is a second shuffled copy of the training loader), computes the hypergradient
    ``d lambda_i = -alpha g_i(train; theta) . grad L_P(val; theta')`` exactly, by differentiating
    through the virtual step (the paper approximates the product by finite differences,
    ``eps = 0.01 / |d|``), gives it to :meth:`apply_hypergradient`, then updates the model on the
    training mini-batch with the new weights.

    Defaults follow the official code: raw ``lambda`` (no softmax; ``weighting="softmax"`` gives
    LibMTL's ``lambda = softmax(w)``), not clipped, initialised to ``init = 0.1`` and stepped by
    Adam (PyTorch defaults) with ``lr = 1e-4`` (``autol_lr`` for NYUv2; 3e-5 for Cityscapes);
    ``optimizer="sgd"`` steps ``lambda -= lr * d lambda``. Every task is primary unless
    ``primary`` names some (the paper's auxiliary-learning setting). ``virtual_lr`` is the
    virtual step's ``alpha``: the official code uses the model optimiser's current learning rate
    (0.1 at the start of its NYUv2 SGD schedule); ``virtual_lr="optimizer"`` does the same (the
    trainer's optimizer, its schedule's value at each step), and a number fixes it (0.1 by
    default, so that the meta step does not shrink with an Adam-sized learning rate). The official
    virtual step also adds the SGD momentum buffer and weight decay; this one is plain SGD.

    Example:
        >>> b = AutoLambda(); b.setup(["semseg", "depth"])
        >>> float(b.combine(tf.constant([2.0, 4.0]), None, 0)[0])  # 0.1 * 2 + 0.1 * 4
        0.6
    """

    needs = Needs({"bilevel": "lookahead"}, batches=2)

    def __init__(
        self,
        init: float = 0.1,
        lr: float = 1e-4,
        virtual_lr: float | str = 0.1,
        primary: Sequence[str] | None = None,
        weighting: str = "raw",
        optimizer: str = "adam",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if weighting not in WEIGHTINGS or optimizer not in OPTIMIZERS:
            raise ValueError(
                f"weighting must be one of {WEIGHTINGS} and optimizer one of {OPTIMIZERS}, got "
                f"{weighting!r} and {optimizer!r}"
            )
        if virtual_lr != "optimizer" and (
            isinstance(virtual_lr, (str, bool)) or not virtual_lr > 0
        ):
            raise ValueError(f'virtual_lr must be > 0 or "optimizer", got {virtual_lr!r}')
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.init, self.lr = float(init), float(lr)
        self.virtual_lr = virtual_lr if virtual_lr == "optimizer" else float(virtual_lr)
        self.primary = None if primary is None else list(primary)
        self.weighting, self.optimizer = weighting, optimizer

    def build_state(self, num_tasks: int) -> None:
        names = list(self.task_names) if self.primary is None else self.primary
        unknown = sorted(set(names) - set(self.task_names))
        if unknown or not names:
            raise ValueError(
                f"primary must name some of the tasks {list(self.task_names)}, got {self.primary}"
            )
        self.primary_mask = tf.constant([float(t in names) for t in self.task_names])
        self.meta_weights = self.add_state(
            "meta_weights", (num_tasks,), keras.initializers.Constant(self.init)
        )
        if self.optimizer == "adam":
            self.moments = self.add_state("moments", (2, num_tasks))
            self.meta_steps = self.add_state("meta_steps", (), dtype="int64")

    def weights_of(self, meta_weights: tf.Tensor) -> tf.Tensor:
        """(T,) the task weights of the meta-parameters: themselves, or their softmax."""
        meta_weights = tf.cast(meta_weights, tf.float32)
        return tf.nn.softmax(meta_weights) if self.weighting == "softmax" else meta_weights

    def combine(self, losses, global_losses, step):
        weights = self.weights_of(self.meta_weights)
        return tf.reduce_sum(weights * tf.cast(losses, tf.float32)), weights

    def apply_hypergradient(self, grad: tf.Tensor) -> None:
        """One meta-optimiser step of the meta-parameters along ``grad``, the all-reduced
        hypergradient ``d L_P(val; theta') / d meta_weights`` (the same on every replica)."""
        grad = tf.cast(grad, tf.float32)
        if self.optimizer == "sgd":
            self.meta_weights.assign_sub(self.lr * grad)
            return
        t = self.meta_steps + 1
        m = BETA_1 * self.moments[0] + (1.0 - BETA_1) * grad
        v = BETA_2 * self.moments[1] + (1.0 - BETA_2) * tf.square(grad)
        tf32 = tf.cast(t, tf.float32)
        m_hat, v_hat = m / (1.0 - BETA_1**tf32), v / (1.0 - BETA_2**tf32)
        self.moments.assign(tf.stack([m, v]))
        self.meta_steps.assign(t)
        self.meta_weights.assign_sub(self.lr * m_hat / (tf.sqrt(v_hat) + EPSILON))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "init": self.init,
            "lr": self.lr,
            "virtual_lr": self.virtual_lr,
            "primary": self.primary,
            "weighting": self.weighting,
            "optimizer": self.optimizer,
        }
