"""CR-MOGM: MGDA's weights averaged over steps, so stochastic gradients do not bias them."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing.mgda import MGDA


@keras.saving.register_keras_serializable(package="mtl_keras")
class CRMOGM(MGDA):
    """Zhou et al., "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
    Beyond", NeurIPS 2022 (correlation-reduced MOGM, here with MGDA as the manipulation).

    ``lambda_k = alpha lambda_{k-1} + (1 - alpha) lambda_hat_k``, update ``sum_i lambda_k,i g_i``,
    where ``lambda_hat_k`` are MGDA's min-norm weights of the current Gramian (:class:`MGDA`, its
    Frank-Wolfe solver and normalisers). Weights computed from one mini-batch only are correlated
    with that batch's gradients, which biases stochastic MGDA; averaging them over steps reduces
    the correlation, and the paper proves convergence for it.

    Defaults: ``momentum`` (alpha) ``= 0.9``, a constant, as TorchJD's ``CRMOGMWeighting`` (the
    paper analyses a schedule of ``alpha_k`` growing towards 1); ``lambda_0 = 1/T`` (times T with
    ``scale="tasks"``), as TorchJD's first version (later ones start from ``lambda_hat_1``; the
    difference fades within a few tens of steps at 0.9); MGDA's own defaults
    (``normalization="none"``, ``max_iter = 250``, ``tol = 1e-5``, ``scale="one"``). The
    averaged weights are a non-trainable variable (saved, equal on every replica). With
    ``momentum = 0`` this is MGDA.

    Example:
        >>> b = CRMOGM(momentum=0.5); b.setup(["a", "b"])
        >>> G = tf.constant([[1.0, 0.0], [0.0, 4.0]])  # MGDA's weights: (0.8, 0.2)
        >>> b.weights_from_gramian(G, tf.ones(2), 0).numpy().round(3)
        array([0.65, 0.35], dtype=float32)
    """

    def __init__(self, momentum: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"CR-MOGM momentum must be in [0, 1] (0.9 by default), got {momentum}")
        self.momentum = float(momentum)

    def build_state(self, num_tasks: int) -> None:
        start = 1.0 if self.scale == "tasks" else 1.0 / num_tasks
        self.averaged = self.add_state(
            "averaged_weights", (num_tasks,), keras.initializers.Constant(start)
        )

    def weights_from_gramian(self, gramian, losses, step):
        current = super().weights_from_gramian(gramian, losses, step)
        w = self.momentum * tf.convert_to_tensor(self.averaged) + (1.0 - self.momentum) * current
        self.averaged.assign(w)
        return w

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}
