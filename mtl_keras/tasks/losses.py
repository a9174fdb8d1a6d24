"""Per-pixel losses of the survey's experiments (Vandenhende et al., TPAMI 2022, Sec. 5).

All losses take a label map ``(B, H, W, C_label)`` and a raw prediction ``(B, H, W, C)`` at the same
spatial size, compute in float32 whatever the compute dtype, and average over the valid pixels of
the batch (a batch with no valid pixel gives 0, not NaN).

Under a distribution strategy each replica sees part of the batch. ``count_mean`` maps a local count
to the mean of that count over replicas (identity on one device); dividing the local sum by it makes
the replica average of the losses exactly the global-batch loss, even when replicas hold different
numbers of valid pixels.
"""

from __future__ import annotations

import tensorflow as tf

_EPS = 1e-12


def _identity(x):
    return x


def _safe_mean(total: tf.Tensor, count: tf.Tensor, count_mean=_identity) -> tf.Tensor:
    return tf.math.divide_no_nan(total, count_mean(tf.cast(count, tf.float32)))


def valid_class_pixels(label, ignore_value: int | None = 255) -> tf.Tensor:
    """(B, H, W) bool: pixels of a class map ``(B, H, W, 1)`` not labelled ``ignore_value``."""
    ids = tf.cast(label[..., 0], tf.int32)
    if ignore_value is None:
        return tf.ones_like(ids, tf.bool)
    return tf.not_equal(ids, ignore_value)


def valid_depth_pixels(label) -> tf.Tensor:
    """(B, H, W) bool: pixels of a depth map ``(B, H, W, 1)`` with a valid (> 0) depth."""
    return tf.cast(label, tf.float32)[..., 0] > 0.0


def valid_vector_pixels(label) -> tf.Tensor:
    """(B, H, W) bool: pixels of a vector map ``(B, H, W, C)`` (normals) that are not zero."""
    return tf.reduce_any(tf.not_equal(tf.cast(label, tf.float32), 0.0), axis=-1)


def valid_binary_pixels(label, ignore_value: int | None = 255) -> tf.Tensor:
    """(B, H, W) bool: pixels of a binary map ``(B, H, W, 1)`` not labelled ``ignore_value``."""
    label = tf.cast(label, tf.float32)[..., 0]
    if ignore_value is None:
        return tf.ones_like(label, tf.bool)
    return tf.not_equal(label, float(ignore_value))


def softmax_cross_entropy(label, logits, *, ignore_value: int = 255, count_mean=_identity):
    """Softmax cross-entropy averaged over pixels whose label is not ``ignore_value``."""
    logits = tf.cast(logits, tf.float32)
    valid = valid_class_pixels(label, ignore_value)
    label = tf.cast(label[..., 0], tf.int32)
    safe_label = tf.where(valid, label, tf.zeros_like(label))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_label, logits=logits)
    ce = tf.where(valid, ce, tf.zeros_like(ce))
    return _safe_mean(tf.reduce_sum(ce), tf.reduce_sum(tf.cast(valid, tf.int32)), count_mean)


def masked_l1_depth(label, prediction, *, count_mean=_identity) -> tf.Tensor:
    """L1 between predicted and true depth over pixels with a valid (non-zero) label."""
    label = tf.cast(label, tf.float32)
    prediction = tf.cast(prediction, tf.float32)
    valid = tf.cast(valid_depth_pixels(label)[..., None], tf.float32)
    err = tf.abs(prediction - label) * valid
    return _safe_mean(tf.reduce_sum(err), tf.reduce_sum(valid), count_mean)


def l2_normalize(x: tf.Tensor) -> tf.Tensor:
    """L2-normalise along channels with the survey's epsilon (1e-12)."""
    x = tf.cast(x, tf.float32)
    norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True))
    return x / tf.maximum(norm, _EPS)


def normals_l1(label, prediction, *, count_mean=_identity) -> tf.Tensor:
    """L1 between the L2-normalised prediction and the unit label, over valid elements.

    Valid pixels have a non-zero label vector; the sum of absolute errors over the valid elements is
    divided by their number (3 per valid pixel), as the survey's ``NormalsLoss(normalize=True)``.
    """
    label = tf.cast(label, tf.float32)
    valid = tf.cast(valid_vector_pixels(label)[..., None], tf.float32)
    err = tf.abs(l2_normalize(prediction) - label) * valid
    return _safe_mean(tf.reduce_sum(err), 3.0 * tf.reduce_sum(valid), count_mean)


def balanced_bce(
    label, logits, *, pos_weight: float | None, ignore_value: int | None = 255, count_mean=_identity
):
    """Balanced binary cross-entropy with logits (HED, Xie & Tu, ICCV 2015).

    ``loss = -mean(w * y * log σ(x) + (1 - w) * (1 - y) * log(1 - σ(x)))`` over all non-ignored
    elements. With ``pos_weight=None`` the weight is chosen per batch as the fraction of negatives,
    ``w = #neg / #total`` (the survey's saliency loss); the edge loss uses a fixed ``w = 0.95``.
    """
    label = tf.cast(label, tf.float32)
    logits = tf.cast(logits, tf.float32)
    valid = tf.cast(valid_binary_pixels(label, ignore_value)[..., None], tf.float32)
    y = tf.where(label > 0.5, 1.0, 0.0) * valid
    if pos_weight is None:
        n_valid = tf.maximum(count_mean(tf.reduce_sum(valid)), 1.0)
        w = count_mean(tf.reduce_sum(valid - y)) / n_valid
    else:
        w = tf.constant(pos_weight, tf.float32)
    # log σ(x) = -softplus(-x), log(1 - σ(x)) = -softplus(x): stable for any logit.
    loss = w * y * tf.nn.softplus(-logits) + (1.0 - w) * (valid - y) * tf.nn.softplus(logits)
    return _safe_mean(tf.reduce_sum(loss), tf.reduce_sum(valid), count_mean)
