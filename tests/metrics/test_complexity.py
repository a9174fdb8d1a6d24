import keras
import pytest

from mtl_keras.metrics import count_flops, count_macs, count_params
from mtl_keras.metrics.complexity import einsum_flops

L = keras.layers


def _model(layer, shape=(16, 16, 3), dtype="float32"):
    inputs = keras.Input(shape, dtype=dtype)
    return keras.Model(inputs, layer(inputs))


def test_conv_flops_are_two_per_multiply_add():
    conv = _model(L.Conv2D(8, 3, padding="same", use_bias=False))
    assert count_flops(conv, (16, 16, 3)) == 2 * 16 * 16 * 3 * 3 * 3 * 8
    assert count_macs(conv, (16, 16, 3)) == 16 * 16 * 3 * 3 * 3 * 8
    with_bias = _model(L.Conv2D(8, 3, padding="same"))
    assert count_flops(with_bias, (16, 16, 3)) == 2 * 16 * 16 * 3 * 3 * 3 * 8 + 16 * 16 * 8


def test_other_layers_and_nested_models():
    assert count_flops(_model(L.Dense(5, use_bias=False), (4, 6)), (4, 6)) == 2 * 4 * 6 * 5
    depthwise = _model(L.DepthwiseConv2D(3, padding="same", use_bias=False), (8, 8, 4))
    assert count_flops(depthwise, (8, 8, 4)) == 2 * 8 * 8 * 3 * 3 * 4
    transposed = _model(L.Conv2DTranspose(2, 3, strides=2, padding="same", use_bias=False))
    assert count_flops(transposed, (16, 16, 3)) == 2 * 16 * 16 * 3 * 3 * 3 * 2
    inner = _model(L.Conv2D(8, 1, use_bias=False), (8, 8, 3))
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, L.Conv2D(2, 1, use_bias=False)(inner(inputs)))
    assert count_flops(outer, (8, 8, 3)) == 2 * 64 * 3 * 8 + 2 * 64 * 8 * 2


def test_einsum_is_counted_like_the_matmul_it_computes():
    """TensorFlow's profiler has no statistic for Einsum (keras-hub's attention and EinsumDense):
    without ours a ViT's transformer layers would count next to nothing."""
    dense = _model(L.EinsumDense("abc,cd->abd", output_shape=(None, 8)), (10, 16))
    assert count_flops(dense, (10, 16)) == 2 * 10 * 16 * 8
    matmul = _model(L.Dense(8, use_bias=False), (10, 16))
    assert count_flops(dense, (10, 16)) == count_flops(matmul, (10, 16))
    assert einsum_flops("bqhd,bkhd->bhqk", [(2, 4, 3, 8), (2, 6, 3, 8)]) == 2 * 2 * 4 * 3 * 8 * 6
    assert einsum_flops("...ij,...jk->...ik", [(3, 1, 4, 5), (2, 5, 6)]) == 2 * 3 * 2 * 4 * 5 * 6
    assert einsum_flops("abc->ac", [(2, 3, 4)]) == 24 and einsum_flops("abc->cba", [(2, 3, 4)]) == 0
    inputs = keras.Input((10, 16))
    attention = keras.Model(inputs, L.MultiHeadAttention(2, 4, use_bias=False)(inputs, inputs))
    projections = 4 * 2 * 10 * 16 * 8  # query, key, value and output, each 2 * 10 * 16 * 8
    products = 2 * (2 * 2 * 10 * 10 * 4)  # scores and the weighted sum of values
    counted = count_flops(attention, (10, 16))
    assert projections + products < counted < projections + products + 2000  # + softmax, scale
    with pytest.raises(ValueError, match="operand"):
        einsum_flops("ab,bc->ac", [(2, 3)])


def test_resize_and_relu_are_not_counted():
    inputs = keras.Input((8, 8, 3))
    x = L.ReLU()(L.UpSampling2D(2, interpolation="bilinear")(inputs))
    assert count_flops(keras.Model(inputs, x), (8, 8, 3)) == 0


def test_uint8_input():
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = L.Rescaling(1 / 255.0)(inputs)  # one multiply and one add per element; the cast is free
    model = keras.Model(inputs, L.Conv2D(2, 1, use_bias=False)(x))
    assert count_flops(model, (8, 8, 3), input_dtype="uint8") == 2 * 192 + 2 * 64 * 3 * 2


def test_profiler_prints_nothing_to_stdout(capfd):
    count_flops(_model(L.Conv2D(4, 3)), (16, 16, 3))
    assert capfd.readouterr().out == ""


def test_count_params_splits_trainable_and_batch_norm_statistics():
    inputs = keras.Input((8, 8, 3))
    x = L.BatchNormalization()(L.Conv2D(8, 3)(inputs))
    model = keras.Model(inputs, L.Dense(2)(x))
    assert count_params(model) == {
        "params": 3 * 3 * 3 * 8 + 8 + 2 * 8 + 8 * 2 + 2,
        "non_trainable_params": 2 * 8,
    }


def test_count_params_needs_a_built_model():
    with pytest.raises(ValueError, match="Build it first"):
        count_params(keras.Sequential([L.Dense(2)]))
