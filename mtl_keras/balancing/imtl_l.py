"""IMTL-L: learned loss scales that make every scaled loss equal to one."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing.base import LossBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class IMTLL(LossBalancer):
    """Loss part of Impartial Multi-Task Learning (Liu et al., ICLR 2021).

    ``L = sum_i exp(s_i) L_i - s_i`` with ``s`` learned jointly with the network: the gradient with
    respect to ``s_i`` is ``exp(s_i) L_i - 1``, so at the optimum every scaled loss equals 1
    (scale-invariant). ``s`` starts at 0 (LibMTL) and is a trainable variable of this layer,
    stepped by the model's optimizer. The objective is linear in the losses, so the
    replica-summed gradient is exactly the global one. Task weights are ``exp(s)``.

    Example:
        >>> b = IMTLL(); b.setup(["semseg", "depth"])
        >>> float(b.combine(tf.constant([2.0, 4.0]), None, 0)[0])
        6.0
    """

    def __init__(self, init_scale: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.init_scale = float(init_scale)

    def build_state(self, num_tasks: int) -> None:
        self.log_scales = self.add_weight(
            name="log_scales",
            shape=(num_tasks,),
            initializer=keras.initializers.Constant(self.init_scale),
            dtype="float32",
            trainable=True,
            autocast=False,
        )

    def combine(self, losses, global_losses, step):
        s = tf.convert_to_tensor(self.log_scales)
        w = tf.exp(s)
        return tf.reduce_sum(w * tf.cast(losses, tf.float32) - s), w

    def get_config(self) -> dict:
        return {**super().get_config(), "init_scale": self.init_scale}
