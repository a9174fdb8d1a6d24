"""PAP-Net: pattern-affinitive propagation (Zhang et al., CVPR 2019).

Zhang, Cui, Xu, Yan, Sebe and Yang, "Pattern-Affinitive Propagation across Depth, Surface Normal
and Semantic Segmentation", CVPR 2019; the survey's Sec. 3.2.2. After PAD-Net-like initial
predictions (``"{task}/initial"``, supervised):

1. *affinity learning*: per task, a 1x1 conv gives affinity features, resized to the *affinity
   resolution* ``(h_a, w_a)``; their pairwise pixel affinities form a row-stochastic matrix
   ``M_i = softmax_rows(A_i A_i^T / sqrt(c))`` of size ``N x N``, ``N = h_a * w_a``;
2. *cross-task propagation*: every task ``j`` combines all tasks' matrices with its own learned
   weights, ``M^_j = sum_i alpha_ji M_i``, ``alpha_j = softmax(w_j)`` (``w_j`` starts at 0, i.e.
   equal weights);
3. *task-specific propagation*: the task features, resized to the affinity resolution, diffuse
   ``X^{k+1} = beta M^_j X^k + (1 - beta) X^0`` for ``iterations`` steps; the change
   ``X^K - X^0`` is resized back and added to the full-resolution task features;
4. per task, two bottleneck blocks and a 1x1 conv give the final prediction.

**Memory.** The affinities are dense, so their cost is set by the affinity resolution alone:
``2 T`` matrices of ``N^2`` floats per image (``T`` task matrices and ``T`` combinations), i.e.
``8 T N^2`` bytes in float32, kept again for the backward pass, and ``2 N^2 C`` FLOPs per
diffusion step and task. The default stride 16 gives ``30 x 40`` on NYUD's 480x640 (N = 1,200:
5.8 MB per matrix and image); stride 8 would need 92 MB per matrix and stride 4 1.5 GB. Set the
resolution with ``head_kwargs={"affinity_stride": s}`` (relative to the input) or
``{"affinity_size": (h_a, w_a)}`` (fixed, needed when the input size is not fixed).

The paper's normalisation of the affinities, its value of ``beta`` and its iteration count were
not checked against its text: the row softmax, ``beta = 0.05`` and 3 iterations are our choices.
The paper's extra affinity loss is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import keras
import tensorflow as tf

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "channels": 256,  # width of the task features
    "affinity_channels": 128,  # width of the affinity features
    "affinity_stride": 16,  # affinity resolution = ceil(input / stride) ...
    "affinity_size": None,  # ... unless given as (h_a, w_a)
    "beta": 0.05,
    "iterations": 3,
    "features": blocks.LEVELS,
    "sync_batchnorm": True,
}


@keras.saving.register_keras_serializable(package="mtl_keras")
class PixelAffinity(keras.layers.Layer):
    """Row-stochastic pairwise affinities of a feature map.

    ``(B, h, w, c) -> (B, N, N)`` with ``N = h * w`` and row ``p`` equal to
    ``softmax_q(<a_p, a_q> / sqrt(c))``.

    Example:
        >>> m = PixelAffinity()(keras.ops.ones((1, 2, 3, 4)))
        >>> tuple(m.shape), round(float(keras.ops.sum(m[0, 0])), 5)
        ((1, 6, 6), 1.0)
    """

    def call(self, x):
        shape = tf.shape(x)
        flat = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3]])
        logits = tf.matmul(flat, flat, transpose_b=True) / math.sqrt(x.shape[-1])
        return tf.nn.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        n = h * w if h is not None and w is not None else None
        return (b, n, n)


@keras.saving.register_keras_serializable(package="mtl_keras")
class AffinityMix(keras.layers.Layer):
    """One task's combination of all tasks' affinities: ``sum_i softmax(w)_i M_i``.

    The logits ``w`` (one per task, initialised to 0, i.e. equal weights) are trained.
    """

    def __init__(self, num_tasks: int, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = int(num_tasks)

    def build(self, input_shape):
        self.logits = self.add_weight(
            shape=(self.num_tasks,), initializer="zeros", name="logits", trainable=True
        )

    def call(self, matrices):
        alpha = tf.nn.softmax(tf.cast(self.logits, matrices[0].dtype))
        return tf.add_n([alpha[i] * m for i, m in enumerate(matrices)])

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_tasks": self.num_tasks}


@keras.saving.register_keras_serializable(package="mtl_keras")
class AffinityDiffusion(keras.layers.Layer):
    """``X^{k+1} = beta M X^k + (1 - beta) X^0`` for ``iterations`` steps, from ``X^0 = x``.

    Inputs ``[x (B, h, w, C), M (B, N, N)]`` with ``N = h * w``; returns ``X^K``, shaped as ``x``.
    """

    def __init__(self, beta: float = 0.05, iterations: int = 3, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(beta) <= 1.0 or int(iterations) < 0:
            raise ValueError(
                f"diffusion needs 0 <= beta <= 1 and iterations >= 0, got beta={beta!r}, "
                f"iterations={iterations!r}"
            )
        self.beta, self.iterations = float(beta), int(iterations)

    def call(self, inputs):
        x, matrix = inputs
        shape = tf.shape(x)
        x0 = tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3]])
        xk = x0
        for _ in range(self.iterations):
            xk = self.beta * tf.matmul(matrix, xk) + (1.0 - self.beta) * x0
        return tf.reshape(xk, shape)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "iterations": self.iterations}


def affinity_resolution(opts: Mapping, image_size) -> tuple[int, int]:
    """``affinity_size`` if given, else ``ceil(image_size / affinity_stride)``."""
    if opts["affinity_size"] is not None:
        h, w = (int(v) for v in opts["affinity_size"])
        if h < 1 or w < 1:
            raise ValueError(f"papnet: affinity_size must be positive, got {opts['affinity_size']}")
        return h, w
    if not image_size or None in tuple(image_size):
        raise ValueError(
            "papnet: the affinity resolution follows the input size, which is not fixed "
            f"(image_size={image_size}); give image_size=(H, W) or "
            "head_kwargs={'affinity_size': (h, w)}"
        )
    stride = int(opts["affinity_stride"])
    if stride < 1:
        raise ValueError(f"papnet: affinity_stride must be >= 1, got {stride}")
    return tuple(-(-int(v) // stride) for v in image_size)


def build_papnet(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "hrnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "hrnet",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    name: str = "papnet",
) -> keras.Model:
    """PAP-Net: initial predictions, cross-task affinities, diffusion, final predictions.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: must be ``"hrnet"``: PAP-Net builds its own heads.
        head_kwargs: decoder options: ``channels`` (256), ``affinity_channels`` (128),
            ``affinity_stride`` (16) or ``affinity_size`` (``(h_a, w_a)``, overrides the stride),
            ``beta`` (0.05), ``iterations`` (3), ``features`` (levels fused into the decoder
            input, default all four), ``sync_batchnorm`` (True). See the module docstring for
            the memory the affinity resolution costs.
        image_size: ``(H, W)`` of the input, or None for any size (then give ``affinity_size``).
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}`` plus
        ``{"{task}/initial": (B, h, w, channels)}`` at the decoder's resolution.

    Example:
        >>> model = build_papnet(["semseg", "depth"], backbone="resnet10",
        ...                      backbone_kwargs={"width": 8}, image_size=(32, 32),
        ...                      head_kwargs={"channels": 8, "affinity_channels": 4},
        ...                      task_options={"semseg": {"num_classes": 5}})
        >>> model.get_layer("semseg_affinity").output.shape  # (32 / 16)^2 pixels
        (None, 4, 4)
    """
    specs = resolve(tasks, task_options)
    opts = blocks.decoder_options("papnet", head, head_kwargs, DEFAULTS)
    width, sync = int(opts["channels"]), {"sync_batchnorm": bool(opts["sync_batchnorm"])}
    size = affinity_resolution(opts, image_size)

    image = image_input(image_size)
    shared = blocks.fused_representation(image, backbone, backbone_kwargs, opts["features"], **sync)

    outputs, features, matrices = {}, {}, {}
    for t, spec in specs.items():
        features[t], outputs[f"{t}/initial"] = blocks.task_prediction(
            shared, width, spec.channels, f"{t}_initial", **sync
        )
        a = keras.layers.Conv2D(int(opts["affinity_channels"]), 1, name=f"{t}_affinity_features")(
            features[t]
        )
        a = keras.layers.Resizing(*size, name=f"{t}_affinity_resize")(a)
        matrices[t] = PixelAffinity(name=f"{t}_affinity")(a)

    diffusion = {"beta": float(opts["beta"]), "iterations": int(opts["iterations"])}
    for t, spec in specs.items():
        mixed = AffinityMix(len(specs), name=f"{t}_affinity_mix")(list(matrices.values()))
        small = keras.layers.Resizing(*size, name=f"{t}_diffusion_resize")(features[t])
        diffused = AffinityDiffusion(**diffusion, name=f"{t}_diffusion")([small, mixed])
        change = keras.layers.Subtract(name=f"{t}_diffusion_change")([diffused, small])
        change = ResizeLike(name=f"{t}_diffusion_upsample")([change, features[t]])
        x = keras.layers.Add(name=f"{t}_propagated")([features[t], change])
        _, y = blocks.task_prediction(x, width, spec.channels, f"{t}_final", **sync)
        outputs[t] = blocks.to_image(y, image, t)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
