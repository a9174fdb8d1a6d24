"""DWA: weights from the recent rate of decrease of each task's loss."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer

MODES = ("epoch", "window")


@keras.saving.register_keras_serializable(package="mtl_keras")
class DynamicWeightAverage(LossBalancer):
    """Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019).

    ``w_i = T exp(r_i / temperature) / sum_j exp(r_j / temperature)``, ``r_i = Lbar_i(t-1) /
    Lbar_i(t-2)``; ``L = sum_i w_i L_i``.

    ``mode="epoch"`` (the paper, MTAN and LibMTL): ``Lbar(t)`` is the mean training loss of epoch
    ``t``; the weights are 1 during the first two epochs. Losses are accumulated every step and
    the trainer must call :meth:`on_epoch_end` at the end of each epoch.
    ``mode="window"`` (the Nash-MTL/FAMO code): ``Lbar(t-1)`` and ``Lbar(t-2)`` are the means of
    the latest and of the previous ``window`` steps' losses (the current step included); weights
    are 1 until ``2 * window`` steps have been seen (Nash-MTL pads its buffer with ones instead).
    ``temperature = 2`` (the paper). ``reduction="sum"`` returns ``sum_i w_i L_i`` (the paper);
    ``"mean"`` divides by T as Nash-MTL/FAMO do. Loss statistics come from the all-reduced losses
    and live in non-trainable variables, so they are identical on every replica and saved.

    Example:
        >>> b = DynamicWeightAverage(mode="window", window=1); b.setup(["a", "b"])
        >>> _ = b.combine(tf.ones(2), tf.constant([1.0, 1.0]), 0)
        >>> b.combine(tf.ones(2), tf.constant([1.0, 0.5]), 1)[1].numpy().round(3)
        array([1.124, 0.876], dtype=float32)
    """

    def __init__(
        self,
        temperature: float = 2.0,
        mode: str = "epoch",
        window: int = 25,
        reduction: str = "sum",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown DWA mode {mode!r}; valid: {', '.join(MODES)}")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"DWA reduction must be 'sum' or 'mean', got {reduction!r}")
        if int(window) < 1:
            raise ValueError(f"DWA window must be a positive number of steps, got {window}")
        self.temperature, self.mode = float(temperature), mode
        self.window, self.reduction = int(window), reduction

    def build_state(self, num_tasks: int) -> None:
        if self.mode == "epoch":
            self.loss_sum = self.add_state("loss_sum", (num_tasks,))
            self.loss_count = self.add_state("loss_count", ())
            self.epoch_means = self.add_state("epoch_means", (2, num_tasks), "ones")
            self.epochs_seen = self.add_state("epochs_seen", (), dtype="int64")
        else:
            self.history = self.add_state("history", (2 * self.window, num_tasks), "ones")
            self.steps_seen = self.add_state("steps_seen", (), dtype="int64")

    def _softmax_weights(self, older, latest, ready):
        ratio = tf.math.divide_no_nan(latest, older)
        w = float(self.num_tasks) * tf.nn.softmax(ratio / self.temperature)
        return tf.where(ready, w, tf.ones_like(w))

    def combine(self, losses, global_losses, step):
        g = tf.cast(tf.stop_gradient(losses if global_losses is None else global_losses), "float32")
        if self.mode == "epoch":
            means = tf.convert_to_tensor(self.epoch_means)
            w = self._softmax_weights(means[0], means[1], self.epochs_seen >= 2)
            self.loss_sum.assign_add(g)
            self.loss_count.assign_add(1.0)
        else:
            history = tf.concat([self.history[1:], g[None]], axis=0)
            self.history.assign(history)
            self.steps_seen.assign_add(1)
            ready = self.steps_seen >= 2 * self.window
            older = tf.reduce_mean(history[: self.window], axis=0)
            w = self._softmax_weights(older, tf.reduce_mean(history[self.window :], axis=0), ready)
        objective = tf.reduce_sum(w * tf.cast(losses, tf.float32))
        if self.reduction == "mean":
            objective = objective / float(self.num_tasks)
        return objective, w

    def on_epoch_end(self) -> None:
        """Close the epoch: its mean losses become ``Lbar(t-1)`` (epoch mode; else a no-op)."""
        if self.mode != "epoch":
            return
        count = tf.convert_to_tensor(self.loss_count)
        seen = count > 0
        mean = tf.math.divide_no_nan(tf.convert_to_tensor(self.loss_sum), count)
        means = tf.convert_to_tensor(self.epoch_means)
        self.epoch_means.assign(tf.where(seen, tf.stack([means[1], mean]), means))
        self.epochs_seen.assign_add(tf.cast(seen, tf.int64))
        self.loss_sum.assign(tf.zeros_like(mean))
        self.loss_count.assign(0.0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "mode": self.mode,
            "window": self.window,
            "reduction": self.reduction,
        }
