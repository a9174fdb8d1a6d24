"""Shared numerics of the balancers: small problems on the T x T Gramian, run in the graph.

Everything here works on tensors of a few tasks, so it runs in float64 (exact enough to compare
against closed forms, and cheap), never leaves the device and has a fixed iteration budget or
none: the quadratic programs are solved *exactly* by enumerating the active sets when there are
at most ``MAX_ENUMERATE`` tasks (all ``2^T`` candidate supports are solved in one batched
pseudo-inverse and the one satisfying the KKT conditions is kept) and by an accelerated
projected-gradient method with a fixed budget beyond that.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Largest task count solved by active-set enumeration (2^T candidate supports).
MAX_ENUMERATE = 10
#: float32 machine epsilon: the inputs are float32 gradients, so relative rank cut-offs use it.
EPS32 = float(np.finfo(np.float32).eps)


def f64(x) -> tf.Tensor:
    return tf.cast(x, tf.float64)


def symmetrize(g: tf.Tensor) -> tf.Tensor:
    return 0.5 * (g + tf.linalg.matrix_transpose(g))


def psd_pinv(g: tf.Tensor, rtol: float | None = None) -> tf.Tensor:
    """Pseudo-inverse of a (batch of) symmetric PSD matrices through their eigendecomposition.

    Eigenvalues at or below ``rtol * max eigenvalue`` (default ``T * eps32``, the rank tolerance
    of float32 data) are treated as zero, so singular and rank-deficient Gramians (zero,
    duplicated or linearly dependent gradients) are handled without errors.
    """
    lam, v = tf.linalg.eigh(symmetrize(g))
    rtol = g.shape[-1] * EPS32 if rtol is None else rtol
    cutoff = rtol * tf.reduce_max(tf.abs(lam), axis=-1, keepdims=True)
    inv = tf.where(lam > cutoff, tf.math.divide_no_nan(tf.ones_like(lam), lam), tf.zeros_like(lam))
    return tf.matmul(v * inv[..., None, :], v, transpose_b=True)


def subset_masks(num_tasks: int, include_empty: bool = True) -> np.ndarray:
    """(2^T [- 1], T) 0/1 masks of every subset of the tasks, as float64."""
    codes = np.arange(0 if include_empty else 1, 2**num_tasks)
    return ((codes[:, None] >> np.arange(num_tasks)) & 1).astype(np.float64)


def subset_pinvs(g: tf.Tensor, masks: np.ndarray) -> tf.Tensor:
    """(S, T, T) pseudo-inverses of the principal sub-matrices ``G[S, S]``, zero outside ``S``."""
    m = tf.constant(masks, tf.float64)
    return psd_pinv(g[None] * m[:, :, None] * m[:, None, :])


def nonneg_qp(gramian: tf.Tensor, linear: tf.Tensor, iterations: int = 500) -> tf.Tensor:
    """``argmin_{x >= 0} x^T G x / 2 + q^T x`` for every row ``q`` of ``linear``.

    Args:
        gramian: (T, T) PSD matrix (static T).
        linear: (B, T) linear terms, one problem per row.
        iterations: budget of the iterative solver used when T > ``MAX_ENUMERATE``.

    Returns:
        (B, T) float64 minimisers. For T <= ``MAX_ENUMERATE`` the result is exact up to rounding:
        on each candidate support ``S`` the stationary point ``x_S = -G_SS^+ q_S`` is formed and
        the candidate with the smallest violation of the KKT conditions (x >= 0,
        ``(Gx + q)_S = 0``, ``(Gx + q)_{not S} >= 0``) is returned; any KKT point of this convex
        problem is optimal. The problem is first divided by ``trace(G) / T`` (same minimiser).
    """
    g, q = f64(gramian), f64(linear)
    t = g.shape[-1]
    scale = tf.linalg.trace(g) / t
    safe = tf.where(scale > 0, scale, tf.ones_like(scale))
    g, q = g / safe, q / safe
    if t <= MAX_ENUMERATE:
        x = _nonneg_qp_enumerate(g, q)
    else:
        x = _nonneg_qp_fista(g, q, iterations)
    return tf.where(scale > 0, x, tf.zeros_like(x))


def _nonneg_qp_enumerate(g, q):
    masks = subset_masks(g.shape[-1])
    m = tf.constant(masks, tf.float64)  # (S, T)
    x = -tf.einsum("sij,bj->bsi", subset_pinvs(g, masks), q)  # (B, S, T)
    r = tf.einsum("ij,bsj->bsi", g, x) + q[:, None, :]  # gradient of the objective
    violation = tf.reduce_max(
        tf.stack(
            [tf.nn.relu(-x), tf.abs(r) * m, tf.nn.relu(-r) * (1.0 - m)],
            axis=-1,
        ),
        axis=[-2, -1],
    )  # (B, S)
    best = tf.argmin(violation, axis=1, output_type=tf.int32)
    return tf.nn.relu(tf.gather(x, best, axis=1, batch_dims=1))


def _nonneg_qp_fista(g, q, iterations):
    lipschitz = tf.reduce_max(tf.linalg.eigvalsh(g))
    step = 1.0 / tf.maximum(lipschitz, 1e-12)

    def body(k, x, y, tk):
        x_new = tf.nn.relu(y - step * (tf.matmul(y, g) + q))
        t_new = 0.5 * (1.0 + tf.sqrt(1.0 + 4.0 * tk * tk))
        y = x_new + ((tk - 1.0) / t_new) * (x_new - x)
        return k + 1, x_new, y, t_new

    x0 = tf.zeros_like(q)
    one = tf.constant(1.0, tf.float64)
    _, x, _, _ = tf.while_loop(lambda k, *_: k < iterations, body, (tf.constant(0), x0, x0, one))
    return x


def project_simplex(v: tf.Tensor) -> tf.Tensor:
    """Euclidean projection of each row of ``v`` onto the probability simplex (sort-based)."""
    t = v.shape[-1]
    u = tf.sort(v, axis=-1, direction="DESCENDING")
    css = tf.cumsum(u, axis=-1) - 1.0
    k = tf.range(1, t + 1, dtype=v.dtype)
    support = tf.cast(u - css / k > 0, tf.int32)
    rho = tf.reduce_sum(support, axis=-1, keepdims=True)
    theta = tf.gather(css, rho - 1, axis=-1, batch_dims=v.shape.rank - 1) / tf.cast(rho, v.dtype)
    return tf.nn.relu(v - theta)


def step_seed(seed: int, step, salt: int = 0) -> tf.Tensor:
    """Seed of a stateless random op derived from (seed, step, salt).

    Every replica computes the same value from the same step, so stochastic methods draw the same
    numbers everywhere; ``salt`` separates independent draws within one step.
    """
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(pair, salt) if salt else pair


def partner_orders(num_tasks: int, seed: tf.Tensor) -> tf.Tensor:
    """(T, T-1) int32: for each task, a uniformly random order of the other tasks."""
    scores = tf.random.stateless_uniform([num_tasks, num_tasks], seed=seed)
    scores = tf.linalg.set_diag(scores, tf.fill([num_tasks], 2.0))  # self goes last
    return tf.argsort(scores, axis=1)[:, : num_tasks - 1]


def adam_update(param, grad, m, v, count, lr, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam step on small state variables, with L2 ``weight_decay`` added to the gradient.

    Matches ``torch.optim.Adam(..., weight_decay=...)`` (coupled decay, bias-corrected moments).
    """
    grad = tf.cast(grad, tf.float32) + weight_decay * param
    count.assign_add(1)
    t = tf.cast(count, tf.float32)
    m.assign(beta1 * m + (1.0 - beta1) * grad)
    v.assign(beta2 * v + (1.0 - beta2) * tf.square(grad))
    m_hat = m / (1.0 - tf.pow(beta1, t))
    v_hat = v / (1.0 - tf.pow(beta2, t))
    param.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + eps))


def gramian_statistics(gramian: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per-task gradient norms, pairwise cosine similarities and the number of conflicting pairs.

    Args:
        gramian: (T, T) Gramian ``J J^T`` of the per-task gradients.

    Returns:
        ``{"norms": (T,), "cosine": (T, T), "conflicts": scalar int32}``; a pair conflicts when
        its inner product is negative. Zero gradients get cosine 0.
    """
    g = tf.cast(gramian, tf.float32)
    norms = tf.sqrt(tf.nn.relu(tf.linalg.diag_part(g)))
    cosine = tf.math.divide_no_nan(g, norms[:, None] * norms[None, :])
    upper = tf.linalg.band_part(tf.ones_like(g), 0, -1) - tf.linalg.band_part(tf.ones_like(g), 0, 0)
    conflicts = tf.reduce_sum(tf.cast((g < 0) & (upper > 0), tf.int32))
    return {"norms": norms, "cosine": cosine, "conflicts": conflicts}
