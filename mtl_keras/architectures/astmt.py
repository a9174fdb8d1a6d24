"""Attentive Single-Tasking of Multiple Tasks (ASTMT; Maninis et al., CVPR 2019).

One network, executed once per task: all encoder and decoder weights are shared, and the task is
selected by small task-specific modules:

* **task-conditioned squeeze-and-excitation** (Hu et al., CVPR 2018): in every residual block of
  the encoder, the residual branch is rescaled channel-wise by a task's SE module
  (``GAP -> dense C/r -> ReLU -> dense C -> sigmoid``) before the shortcut is added; in the
  decoder a task SE follows every conv + BN + ReLU;
* **residual adapters** (Rebuffi et al., CVPR 2018): a task's bias-free 1x1 convolution
  (same stride) in parallel to every 3x3 convolution of the encoder blocks and to every
  convolution of the decoder, initialised to zero;
* a task-specific 1x1 classifier.

**Design: one functional model running T task-conditioned passes.** ASTMT evaluates the network
once per task; this builder returns a plain functional ``keras.Model`` (image -> ``{task:
prediction}``) in which the shared layers are called once per task, each call wrapped with that
task's modules. It therefore fits the package's contract (``MultiTaskModel``, ``.keras`` files,
export, FLOP counts) unchanged, at the price ASTMT itself pays: a forward pass costs T encoder and
decoder passes. :func:`task_network` extracts the single-task path (one pass, shared weights).
The rejected alternative, a model taking ``(image, task_id)`` and gathering the task's SE/adapter
weights, cannot return the tasks' different channel counts from one output, needs a task-id
input in the data pipeline and serving signature, and cannot train all tasks in one step.

**Adversarial training on gradients** (ASTMT Sec. 3.3): a discriminator classifies, per pixel,
which task produced the gradient of the loss with respect to the shared decoder's output
features (L2-normalised per pixel), through a gradient reversal layer, so the shared layers learn
to make the tasks' gradients indistinguishable. The features are marked with
:class:`TaskFeatures` (one per task, identified by type); the pieces are here
(:class:`GradientReversal`, :func:`build_task_discriminator`, :func:`discriminator_terms`) and the
training step, which differentiates the loss gradients a second time, is
:class:`mtl_keras.training.adversarial.AdversarialMultiTaskModel` (recipes: ``adversarial_weight >
0``; loss-level balancers only; see ``docs/architectures.md``). A plain ``MultiTaskModel`` trains
the network as "ASTMT without adversarial loss" (SE + RA). Everything from the marked features to
the predictions (the task's classifier and :class:`DifferentiableResizeLike`) computes in float32
whatever the dtype policy, so under mixed precision the per-pixel loss gradients, and their second
derivatives, do not leave float16's range.

**Batch normalisation per task** (``task_norm=True``, the default): every batch-normalisation
layer of the encoder and the decoder has one copy per task (scale, shift and moving statistics),
as in the authors' released models (trained with per-task norm layers in the encoder blocks,
their downsampling shortcuts and the SE decoder). Each pass normalises with its own task's
statistics in training, so evaluation must too: with one shared layer, the moving statistics
blend the T passes' distributions and every task is evaluated with statistics it never trained
with (one seed of the synthetic study's ASTMT, trained with shared layers: recomputing the
statistics per task took depth RMSE from 1.19 to 0.95 and edge F from 0.55 to 0.63, same
weights). The copies start from the shared layer's weights, so a pretrained backbone's statistics
reach every task. ``task_norm=False`` shares them.

Only ResNet backbones (blocks named ``stage{s}_block{b}_*``) are supported. The SE modules start
from scratch (ASTMT initialises them from an SE-ResNet, which this package does not have).

Layer names: shared backbone layers keep their names (``stem_conv``, ``stage1_block1_conv1``);
the shared decoder is the head named ``decoder``; per task ``f"{task}_{block}_se_*"``,
``f"{task}_{conv}_adapter"``, ``f"{task}_{bn}"`` (the batch-normalisation copies),
``f"{task}_features"`` and ``f"{task}_classifier"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import keras
import tensorflow as tf

from mtl_keras import heads
from mtl_keras.architectures._blocks import layer_input, replay, resolve_backbone
from mtl_keras.architectures.base import ImageNormalization, mark_task_outputs
from mtl_keras.architectures.hard_sharing import HEAD_FEATURES, image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

_BLOCK_ADD = re.compile(r"(stage\d+_block\d+)_add")
_BLOCK_CONV = re.compile(r"stage\d+_block\d+_conv\d")
_SE_MIN_HIDDEN = 4


@keras.saving.register_keras_serializable(package="mtl_keras")
class TaskFeatures(keras.layers.Layer):
    """Identity marking a task's shared-decoder features (the discriminator's gradient source).

    Args:
        task: the task whose forward pass produced the features.
    """

    def __init__(self, task: str, **kwargs):
        super().__init__(**kwargs)
        self.task = task

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "task": self.task}


@keras.saving.register_keras_serializable(package="mtl_keras")
class GradientReversal(keras.layers.Layer):
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin & Lempitsky, 2015).

    Example:
        >>> x = tf.constant([1.0, 2.0])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     y = tf.reduce_sum(GradientReversal(scale=0.5)(x))
        >>> tape.gradient(y, x).numpy().tolist()
        [-0.5, -0.5]
    """

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        scale = self.scale

        @tf.custom_gradient
        def reverse(t):
            return tf.identity(t), lambda dy: -scale * dy

        return reverse(x)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _interpolation_matrix(out_size, in_size, dtype):
    """``(out, in)`` weights of 1-D bilinear resizing with half-pixel centres (TF and PyTorch's
    ``align_corners=False``): ``in = (out + 0.5) * in_size / out_size - 0.5``, clamped."""
    scale = tf.cast(in_size, dtype) / tf.cast(out_size, dtype)
    coord = (tf.cast(tf.range(out_size), dtype) + 0.5) * scale - 0.5
    floor = tf.floor(coord)
    lerp = (coord - floor)[:, None]
    lower = tf.clip_by_value(tf.cast(floor, tf.int32), 0, in_size - 1)
    upper = tf.clip_by_value(tf.cast(tf.math.ceil(coord), tf.int32), 0, in_size - 1)
    return (
        tf.one_hot(lower, in_size, dtype=dtype) * (1 - lerp)
        + tf.one_hot(upper, in_size, dtype=dtype) * lerp
    )


@keras.saving.register_keras_serializable(package="mtl_keras")
class DifferentiableResizeLike(ResizeLike):
    """Bilinear :class:`ResizeLike` whose gradient is itself differentiable.

    TensorFlow registers no gradient for ``ResizeBilinearGrad``, so a second backward pass (the
    adversarial loss on loss gradients) stops at every bilinear resize. The forward pass here is
    the same ``tf.image.resize``; the backward pass applies the transposed separable interpolation
    matrices (``dx = A_h^T dy A_w``), plain matrix products that differentiate again.
    """

    def __init__(self, **kwargs):
        kwargs.pop("interpolation", None)
        super().__init__(interpolation="bilinear", **kwargs)

    def call(self, inputs):
        x, reference = inputs
        dynamic = tf.shape(reference)
        size = [
            reference.shape[i] if reference.shape[i] is not None else dynamic[i] for i in (1, 2)
        ]

        @tf.custom_gradient
        def resize(t):
            in_size = tf.shape(t)[1:3]

            def grad(dy):
                # tf.image.resize returns float32 whatever the input, so ``dy`` is float32; the
                # input's gradient must have the input's dtype (float16 under mixed precision)
                a_h = _interpolation_matrix(size[0], in_size[0], dy.dtype)
                a_w = _interpolation_matrix(size[1], in_size[1], dy.dtype)
                return tf.cast(tf.einsum("Hh,bHWc,Ww->bhwc", a_h, dy, a_w), t.dtype)

            return tf.image.resize(t, size, method="bilinear", antialias=False), grad

        return tf.cast(resize(x), x.dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("interpolation", None)
        return config


def _squeeze_excite(x, name: str, reduction: int):
    """Task SE: ``x * sigmoid(W2 relu(W1 mean_hw(x)))`` with ``max(C / r, 4)`` hidden units (the
    floor only matters for tiny test widths, where a single hidden ReLU is often dead)."""
    channels = x.shape[-1]
    hidden = max(channels // reduction, _SE_MIN_HIDDEN)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = keras.layers.Dense(hidden, activation="relu", name=f"{name}_se_fc1")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", name=f"{name}_se_fc2")(s)
    return keras.layers.Multiply(name=f"{name}_se_scale")([x, s])


def _adapter(layer: keras.layers.Conv2D, x, out, name: str):
    """``out + conv1x1(x)`` with a zero-initialised bias-free 1x1 conv of the layer's stride."""
    y = keras.layers.Conv2D(
        layer.filters,
        1,
        strides=layer.strides,
        use_bias=False,
        kernel_initializer="zeros",
        name=f"{name}_adapter",
    )(x)
    return keras.layers.Add(name=f"{name}_adapted")([out, y])


def _unpadded(x):
    """The tensor before an explicit ``ZeroPadding2D`` (ResNet pads before strided convs)."""
    producer = x._keras_history.operation
    return layer_input(x) if isinstance(producer, keras.layers.ZeroPadding2D) else x


def build_astmt(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "deeplab",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    features: Sequence[str] | None = None,
    se_reduction: int = 16,
    adapters: bool = True,
    task_norm: bool = True,
    name: str = "astmt",
) -> keras.Model:
    """ASTMT: one task-conditioned pass per task through a shared ResNet and decoder.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered ResNet name or a built ResNet (its layers are shared as they are).
        backbone_kwargs: arguments of the backbone builder.
        head: the shared decoder, ``"deeplab"``, ``"hrnet"`` or ``"conv"`` (its classifier is
            replaced by one 1x1 classifier per task).
        head_kwargs: arguments of the head builder.
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories.
        features: pyramid levels given to the decoder (default depends on the head).
        se_reduction: channel reduction ``r`` of the SE modules (16 in ASTMT).
        adapters: add the residual adapters (ASTMT's "RA"); False keeps only SE modulation.
        task_norm: one copy of every batch-normalisation layer per task (the released models);
            False shares them across the tasks' passes.
        name: model name.

    Example:
        >>> model = build_astmt(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head="conv", image_size=(32, 32))
        >>> tuple(model.get_layer("depth_stage4_block1_se_fc1").kernel.shape)  # 64 / 16
        (64, 4)
    """
    specs = resolve(tasks, task_options)
    if head not in HEAD_FEATURES:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEAD_FEATURES)}")
    bb = resolve_backbone(backbone, backbone_kwargs)
    if not any(_BLOCK_ADD.fullmatch(layer.name) for layer in bb.layers):
        raise ValueError(
            f"ASTMT modulates residual blocks named 'stage{{s}}_block{{b}}_*'; backbone "
            f"{bb.name!r} has none. Use backbone='resnet18' or 'resnet50'."
        )
    levels = tuple(features or HEAD_FEATURES[head])
    decoder = _shared_decoder(bb, levels, head, head_kwargs)

    image = image_input(image_size)
    x = ImageNormalization(name="normalize")(image)
    outputs = {}
    for task, spec in specs.items():
        pyramid = replay(bb, x, _encoder_call(task, se_reduction, adapters, task_norm))
        feats = replay(
            decoder,
            [pyramid[level] for level in levels],
            _decoder_call(task, se_reduction, adapters, task_norm),
        )
        # the tail from the marked features on runs in float32 whatever the policy: the
        # adversarial step differentiates it twice (see the module docstring)
        feats = TaskFeatures(task, name=f"{task}_features", dtype="float32")(feats)
        logits = keras.layers.Conv2D(spec.channels, 1, name=f"{task}_classifier", dtype="float32")(
            feats
        )
        outputs[task] = DifferentiableResizeLike(name=task, dtype="float32")([logits, image])
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)


def _shared_decoder(bb: keras.Model, levels, head: str, head_kwargs) -> keras.Model:
    """The head up to (without) its classifier, as a model on the backbone's pyramid levels."""
    inputs = [keras.Input(bb.output[level].shape[1:], name=level) for level in levels]
    head_fn = heads.get(head)
    logits = head_fn(
        inputs if head == "hrnet" else inputs[0], 1, name="decoder", **dict(head_kwargs or {})
    )
    features = logits._keras_history.operation.input  # the classifier's input
    return keras.Model(inputs, features, name="decoder")


def _task_norm(layer: keras.layers.BatchNormalization, task: str, args, kwargs):
    """``layer``'s copy for ``task``, called on ``args``, starting from ``layer``'s weights."""
    copy = type(layer).from_config({**layer.get_config(), "name": f"{task}_{layer.name}"})
    out = copy(*args, **kwargs)
    if layer.built:
        copy.set_weights(layer.get_weights())
    return out


def _encoder_call(task: str, reduction: int, adapters: bool, task_norm: bool):
    def call(layer, args, kwargs):
        match = _BLOCK_ADD.fullmatch(layer.name)
        if match:  # SE on the residual branch, then the shared add
            residual, shortcut = args[0]
            residual = _squeeze_excite(residual, f"{task}_{match[1]}", reduction)
            return layer([residual, shortcut], **kwargs)
        if task_norm and isinstance(layer, keras.layers.BatchNormalization):
            return _task_norm(layer, task, args, kwargs)
        out = layer(*args, **kwargs)
        if (
            adapters
            and isinstance(layer, keras.layers.Conv2D)
            and _BLOCK_CONV.fullmatch(layer.name)
            and layer.kernel_size == (3, 3)
        ):
            out = _adapter(layer, _unpadded(args[0]), out, f"{task}_{layer.name}")
        return out

    return call


def _decoder_call(task: str, reduction: int, adapters: bool, task_norm: bool):
    def call(layer, args, kwargs):
        if task_norm and isinstance(layer, keras.layers.BatchNormalization):
            return _task_norm(layer, task, args, kwargs)
        out = layer(*args, **kwargs)
        if adapters and isinstance(layer, keras.layers.Conv2D):
            out = _adapter(layer, args[0], out, f"{task}_{layer.name}")
        if isinstance(layer, keras.layers.ReLU):
            out = _squeeze_excite(out, f"{task}_{layer.name}", reduction)
        return out

    return call


def task_network(network: keras.Model, task: str) -> keras.Model:
    """The single-task path of an ASTMT model (one pass; weights shared with ``network``).

    Example:
        >>> semseg_only = task_network(model, "semseg")  # doctest: +SKIP
    """
    if task not in network.output:
        raise ValueError(
            f"task {task!r} is not an output of {network.name!r}: {list(network.output)}"
        )
    return keras.Model(network.input, {task: network.output[task]}, name=f"{network.name}_{task}")


def task_features(network: keras.Model) -> dict[str, keras.KerasTensor]:
    """``{task: features tensor}`` of the :class:`TaskFeatures` markers of an ASTMT model."""
    return {layer.task: layer.output for layer in network.layers if isinstance(layer, TaskFeatures)}


def build_task_discriminator(
    channels: int,
    num_tasks: int,
    *,
    depth: int = 2,
    kernel_size: int = 1,
    reversal: float = 1.0,
    name: str = "task_discriminator",
) -> keras.Model:
    """ASTMT's fully convolutional discriminator on loss gradients, behind a reversal layer.

    Input: the gradient of a task loss with respect to that task's :class:`TaskFeatures`,
    ``(B, h, w, channels)``; it is L2-normalised per pixel (``g / ||g||``), passed
    through :class:`GradientReversal` (``reversal`` is ASTMT's lambda), then ``depth - 1`` blocks
    of bias-free conv + ReLU and a conv to ``num_tasks`` logits per pixel (ASTMT's defaults:
    depth 2, 1x1 kernels). Every layer computes in float32 whatever the dtype policy: per-pixel
    loss gradients are far below float16's range.
    """
    grads = keras.Input((None, None, channels), name="gradients")
    x = keras.layers.UnitNormalization(axis=-1, name="normalize", dtype="float32")(grads)
    x = GradientReversal(reversal, name="reversal", dtype="float32")(x)
    for i in range(1, depth):
        x = keras.layers.Conv2D(
            channels,
            kernel_size,
            padding="same",
            use_bias=False,
            name=f"conv{i}",
            dtype="float32",
        )(x)
        x = keras.layers.ReLU(name=f"relu{i}", dtype="float32")(x)
    logits = keras.layers.Conv2D(
        num_tasks, kernel_size, padding="same", name="logits", dtype="float32"
    )(x)
    return keras.Model(grads, logits, name=name)


def _identity(x):
    return x


def discriminator_terms(
    discriminator: keras.Model, gradients: Mapping[str, tf.Tensor], tasks, *, count_mean=_identity
) -> tuple[tf.Tensor, tf.Tensor]:
    """Loss and accuracy of the discriminator classifying each task's gradients, per pixel.

    Task ``i`` has label ``i``. Pixels where a task's gradient is exactly zero (the task's loss
    does not see them: ignored labels) are left out, as ASTMT leaves out pixels without a valid
    label; they also pass no gradient back (their normalisation has no direction). Per task, the
    cross-entropy and the accuracy are averaged over its remaining pixels; the results are the
    means over tasks.

    Args:
        discriminator: from :func:`build_task_discriminator`.
        gradients: ``{task: dL_task / d features_task}``.
        tasks: the task order.
        count_mean: maps a local pixel count to its mean over replicas (as the task losses'
            ``count_mean``), so that the replicas' average is the global batch's value.
    """
    losses, accuracies = [], []
    for index, task in enumerate(tasks):
        g = tf.cast(gradients[task], tf.float32)
        valid = tf.reduce_any(tf.not_equal(g, 0.0), axis=-1)
        g = tf.where(valid[..., None], g, tf.zeros_like(g))  # no gradient through empty pixels
        logits = tf.cast(discriminator(g), tf.float32)
        labels = tf.fill(tf.shape(logits)[:-1], index)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), index), tf.float32)
        weight = tf.cast(valid, tf.float32)
        count = count_mean(tf.reduce_sum(weight))
        losses.append(tf.math.divide_no_nan(tf.reduce_sum(ce * weight), count))
        accuracies.append(tf.math.divide_no_nan(tf.reduce_sum(correct * weight), count))
    return tf.add_n(losses) / len(losses), tf.stop_gradient(tf.add_n(accuracies) / len(accuracies))


def discriminator_loss(
    discriminator: keras.Model, gradients: Mapping[str, tf.Tensor], tasks
) -> tf.Tensor:
    """Mean per-pixel cross-entropy of the discriminator classifying each task's gradients
    (the loss of :func:`discriminator_terms`).

    Args:
        discriminator: from :func:`build_task_discriminator`.
        gradients: ``{task: dL_task / d features_task}``.
        tasks: the task order (task ``i`` has label ``i``).
    """
    return discriminator_terms(discriminator, gradients, tasks)[0]
