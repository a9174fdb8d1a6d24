"""Model complexity: parameter counts and the FLOPs of one forward pass.

FLOPs are counted by TensorFlow's graph profiler (``tf.compat.v1.profiler`` with
``ProfileOptionBuilder.float_operation()``) on the graph of a ``tf.function`` that calls the model
with ``training=False`` on one image. The profiler uses the FLOP statistics TensorFlow registers
per op, computed from static shapes:

- a multiply-add counts as 2 FLOPs: Conv2D is 2·H_out·W_out·k_h·k_w·C_in·C_out,
  DepthwiseConv2D 2·H_out·W_out·k_h·k_w·C_in·multiplier, Conv2DTranspose
  2·H_in·W_in·k_h·k_w·C_in·C_out, Dense (MatMul) 2·N·C_in·C_out;
- one FLOP per output element for bias adds, element-wise Add/Sub/Mul/RealDiv/Maximum/Minimum
  and Rsqrt (inference batch normalisation is about 2 per element), one per input element for
  max/average pooling and global means, and 5 per element for Softmax;
- ``Einsum`` (attention and ``EinsumDense`` in keras-hub's transformers, which TensorFlow's
  profiler has no statistic for) is counted here (`einsum_flops`): 2 FLOPs per product of a
  two-operand contraction, 2·∏(size of every index), e.g. ``"ab,bc->ac"`` 2·a·b·c like MatMul;
- **not counted** (no registered statistic): activations such as ReLU and sigmoid, resizing
  (``ResizeBilinear``/``ResizeNearestNeighbor``, so the upsampling in dense heads is free),
  casts, concatenation, padding, reshapes and gathers. Ops whose shapes are not static are also
  skipped.

MACs are conventionally FLOPs / 2 (`count_macs`); that is exact for convolutions and dense layers,
and slightly over-counts the element-wise part.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


def count_params(model: keras.Model) -> dict[str, int]:
    """Trainable and non-trainable weight counts of a built model.

    ``params`` counts the trainable weights, which match PyTorch's ``parameters()`` for the same
    network (batch-norm γ and β are trainable; the moving mean and variance, PyTorch buffers, are
    in ``non_trainable_params``). Count a model before freezing any part of it.

    Args:
        model: a built Keras model.

    Returns:
        ``{"params": int, "non_trainable_params": int}``.

    Example:
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
        >>> count_params(model)
        {'params': 112, 'non_trainable_params': 0}
    """
    if not model.built or not model.weights:
        raise ValueError(
            f"count_params: model {model.name!r} has no weights yet. Build it first, e.g. by "
            "calling it on a batch or with model.build(input_shape)."
        )

    def total(weights) -> int:
        return int(sum(int(np.prod(w.shape)) for w in weights))

    return {
        "params": total(model.trainable_weights),
        "non_trainable_params": total(model.non_trainable_weights),
    }


def count_flops(
    model: keras.Model, input_shape: Sequence[int], input_dtype: str | tf.DType = "float32"
) -> int:
    """FLOPs of one inference forward pass at batch size 1 (a multiply-add counts as 2).

    See the module docstring for what is and is not counted. Nothing is printed: the profiler
    report goes nowhere.

    Args:
        model: a Keras model with a single image input.
        input_shape: the input shape without the batch axis, e.g. ``(480, 640, 3)``.
        input_dtype: the input dtype, e.g. ``"uint8"`` for a model that normalises internally.

    Returns:
        The FLOP count.

    Example:
        >>> inputs = keras.Input((16, 16, 3))
        >>> conv = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
        >>> count_flops(keras.Model(inputs, conv(inputs)), (16, 16, 3))  # 2·16·16·3·3·3·8
        110592
    """
    shape = [1, *(int(d) for d in input_shape)]
    forward = tf.function(lambda x: model(x, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec(shape, tf.as_dtype(input_dtype))).graph
    profiler = tf.compat.v1.profiler
    options = (
        profiler.ProfileOptionBuilder(profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # the profiler calls deprecated shape helpers
    try:
        report = profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    finally:
        tf_logger.setLevel(level)
    extra = sum(_op_einsum_flops(op) for op in graph.get_operations() if op.type == "Einsum")
    return int(report.total_float_ops) + extra


def einsum_flops(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """FLOPs of ``einsum(equation, *operands)`` for operands of static ``shapes``.

    Two operands: 2·∏(size of every index, ellipsis dimensions included), a multiply and an
    add per term of the contraction (``"ab,bc->ac"``: 2·a·b·c, as MatMul). One operand: one add
    per input element when indices are summed out, none for a pure transpose.

    Example:
        >>> einsum_flops("bqhd,bkhd->bhqk", [(1, 4, 2, 8), (1, 6, 2, 8)])  # 2·1·4·2·8·6
        768
    """
    inputs, _, output = equation.replace(" ", "").partition("->")
    operands = inputs.split(",")
    if len(operands) != len(shapes) or len(operands) not in (1, 2):
        raise ValueError(f"einsum {equation!r}: {len(shapes)} operand shapes given")
    sizes: dict[str, int] = {}
    ellipsis: list[int] = []
    for labels, shape in zip(operands, shapes):
        shape = [int(d) for d in shape]
        explicit = labels.replace("...", "")
        rest = len(shape) - len(explicit)
        if "..." in labels:
            before = labels.index("...")
            dims = shape[before : before + rest]
            shape = shape[:before] + shape[before + rest :]
            width = max(len(dims), len(ellipsis))  # broadcast, aligned on the right
            ellipsis = [
                max(a, b)
                for a, b in zip(
                    [1] * (width - len(ellipsis)) + ellipsis, [1] * (width - len(dims)) + dims
                )
            ]
        elif rest:
            raise ValueError(f"einsum {equation!r}: operand {labels!r} has shape {shape}")
        for label, size in zip(explicit, shape):
            sizes[label] = max(sizes.get(label, 1), size)
    total = int(np.prod(list(sizes.values()), dtype=np.int64)) * int(
        np.prod(ellipsis, dtype=np.int64)
    )
    if len(operands) == 2:
        return 2 * total
    summed = set(operands[0].replace("...", "")) - set(output.replace("...", ""))
    return total if summed else 0


def _op_einsum_flops(op) -> int:
    shapes = [tensor.shape for tensor in op.inputs]
    if not all(shape.is_fully_defined() for shape in shapes):
        return 0  # as the profiler, ops without static shapes are skipped
    return einsum_flops(op.get_attr("equation").decode(), [shape.as_list() for shape in shapes])


def count_macs(
    model: keras.Model, input_shape: Sequence[int], input_dtype: str | tf.DType = "float32"
) -> int:
    """Multiply-accumulates of one forward pass at batch size 1: ``count_flops(...) // 2``.

    Args:
        model: a Keras model with a single image input.
        input_shape: the input shape without the batch axis.
        input_dtype: the input dtype.

    Returns:
        The MAC count.
    """
    return count_flops(model, input_shape, input_dtype) // 2
