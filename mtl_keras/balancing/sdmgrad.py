"""SDMGrad: stochastic direction-oriented MGDA on three independent mini-batches per step."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras.balancing._linalg import project_simplex
from mtl_keras.balancing._multi_batch import MultiBatchBalancer


@keras.saving.register_keras_serializable(package="mtl_keras")
class SDMGrad(MultiBatchBalancer):
    """Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms", NeurIPS 2023.

    The direction-oriented problem ``min_{w in simplex} 1/2 ||J^T w + lam g0||^2``, with
    ``g0 = J^T 1/T`` the mean gradient (``lam = 0``: MGDA's min-norm point; ``lam -> inf``: the
    mean gradient), is solved by stochastic projected gradient steps whose gradient
    ``J_xi J_xi'^T (w + lam/T)`` is unbiased because it multiplies the Jacobians of two
    independent mini-batches ``xi, xi'``; the model then steps along
    ``d = J_zeta^T (w + lam/T) / (1 + lam)`` on a third one, ``zeta``. So a step takes three
    mini-batches: the weights from the cross Gramian ``G = J_1 J_2^T`` of the first two, the
    direction on the last.

    Each step: ``G <- G / s^2`` with ``s`` the mean of ``sqrt(max(G_ii, 0))`` (the reference
    codes' normalisation: it makes the inner step size independent of the gradients' scale, so
    scaling the gradients leaves the weights unchanged; skipped when ``s = 0``), then ``niter``
    steps of SGD with momentum from the previous step's ``w``, each projected onto the simplex:
    ``b <- momentum b + G (w + lam/T)``, ``w <- P(w - step_size b)`` (``b`` starts at 0 every
    step). ``w`` starts at ``1/T`` and is state (saved, equal on every replica).

    Defaults: ``lam = 0.3``, the value of the authors' NYU-v2 script and of LibMTL (the official
    code's constructor default, 0.6, is the value of its Meta-World MT10 script; pass
    ``lam=0.6`` for it). ``niter = 20`` (the official code and LibMTL); ``step_size = 5`` and
    ``momentum = 0.5`` (LibMTL; the official code uses 10 and 0.5). With the normalised
    Gramian (diagonal about 1) a step this large does not converge: the 20 inner steps are a
    coarse search that often ends at a vertex of the simplex, and ``w`` moves far from step to
    step, as in both references; ``step_size=0.5`` with ``niter=200`` solves the inner problem
    closely (then ``lam = 0`` on identical mini-batches gives MGDA's point). The official code also
    multiplies ``d`` by T and clips the shared gradient's norm to 1; LibMTL does neither, nor
    does this class (use the optimizer's ``clipnorm``). In the official code the three gradient
    buffers are one tensor (``[tensor] * 3``), so all three hold the last mini-batch's
    gradients; LibMTL keeps them apart, as here. The weights logged are those of the
    direction, ``(w + lam/T) / (1 + lam)``, which sum to 1.

    Example:
        >>> J = tf.constant([[1.0, 0.0], [0.0, 2.0]])  # the same mini-batch three times
        >>> SDMGrad(lam=0.0, niter=200, step_size=0.5).aggregate(J).numpy().round(3)  # MGDA
        array([0.8, 0.4], dtype=float32)
    """

    def __init__(
        self,
        lam: float = 0.3,
        niter: int = 20,
        step_size: float = 5.0,
        momentum: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not float(lam) >= 0 or not float(step_size) > 0 or not 0 <= float(momentum) < 1:
            raise ValueError(
                f"SDMGrad needs lam >= 0, step_size > 0 and 0 <= momentum < 1, got lam={lam}, "
                f"step_size={step_size}, momentum={momentum}"
            )
        if isinstance(niter, bool) or not isinstance(niter, int) or niter < 1:
            raise ValueError(f"SDMGrad niter must be an integer >= 1, got {niter!r}")
        self.lam, self.niter = float(lam), niter
        self.step_size, self.momentum = float(step_size), float(momentum)

    def build_state(self, num_tasks: int) -> None:
        uniform = keras.initializers.Constant(1.0 / num_tasks)
        self.task_weights = self.add_state("task_weights", (num_tasks,), uniform)

    def weights_from_gramians(self, gramians, losses, step):
        g = tf.cast(gramians[0, 1], tf.float32)
        t = g.shape[0]
        s2 = tf.square(tf.reduce_mean(tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))))
        g = tf.where(s2 > 0, g / tf.where(s2 > 0, s2, 1.0), tf.zeros_like(g))
        shift = self.lam / t

        def body(i, w, b):
            b = self.momentum * b + tf.linalg.matvec(g, w + shift)
            return i + 1, project_simplex(w - self.step_size * b), b

        w0 = tf.convert_to_tensor(self.task_weights)
        _, w, _ = tf.while_loop(
            lambda i, *_: i < self.niter,
            body,
            (tf.constant(0), w0, tf.zeros_like(w0)),
            maximum_iterations=self.niter,
        )
        self.task_weights.assign(w)
        direction = (w + shift) / (1.0 + self.lam)
        k = gramians.shape[0]
        return tf.concat([tf.zeros([k - 1, t], tf.float32), direction[None]], 0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "lam": self.lam,
            "niter": self.niter,
            "step_size": self.step_size,
            "momentum": self.momentum,
        }
