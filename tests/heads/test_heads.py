"""Heads: shapes (static and dynamic), hand-counted parameters, ResizeLike and serialisation."""

import keras
import numpy as np
import pytest

from mtl_keras import heads
from mtl_keras.heads import ResizeLike, conv_head, deeplab_head, hrnet_head


def _x(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def test_deeplab_head_shapes_names_and_hand_counted_parameters():
    features = keras.Input((None, None, 4))
    out = deeplab_head(features, 3, name="semseg", rates=(1, 2, 3), filters=2)
    model = keras.Model(features, out)
    # conv weights + BN (gamma, beta) per block, C_in=4, filters=2:
    # 1x1: 4*2+4 = 12; 3 atrous: 3*(9*4*2+4) = 228; pool: 4*2+4 = 12;
    # projection of 5 branches: 10*2+4 = 24; 3x3: 9*2*2+4 = 40; classifier: 2*3+3 = 9
    assert _trainable(model) == 12 + 228 + 12 + 24 + 40 + 9
    assert all(layer.name.startswith("semseg_") for layer in model.layers[1:])
    for name in ("semseg_aspp_pool_conv", "semseg_aspp_atrous3_conv", "semseg_classifier"):
        model.get_layer(name)
    assert model.get_layer("semseg_aspp_atrous2_conv").dilation_rate == (2, 2)
    assert model.get_layer("semseg_aspp_dropout").rate == 0.5
    for h, w in [(8, 8), (5, 11)]:  # two sizes through one dynamic-shape model
        assert model.predict(_x(2, h, w, 4), verbose=0).shape == (2, h, w, 3)


def test_deeplab_image_pooling_branch_is_spatially_constant():
    features = keras.Input((None, None, 4))
    model = keras.Model(features, deeplab_head(features, 3, name="d", filters=2))
    probe = keras.Model(model.input, model.get_layer("d_aspp_pool_resize").output)
    pooled = np.asarray(probe(_x(2, 6, 7, 4), training=False))
    assert pooled.shape == (2, 6, 7, 2)
    np.testing.assert_allclose(pooled, np.broadcast_to(pooled[:, :1, :1], pooled.shape), atol=1e-6)


def test_conv_head_shapes_and_parameters():
    features = keras.Input((None, None, 4))
    model = keras.Model(features, conv_head(features, 5, name="depth", filters=3, num_convs=2))
    # (9*4*3 + 6) + (9*3*3 + 6) + (3*5 + 5)
    assert _trainable(model) == 114 + 87 + 20
    assert model(_x(2, 7, 9, 4)).shape == (2, 7, 9, 5)
    linear = keras.Model(features, conv_head(features, 5, name="lin", num_convs=0))
    assert _trainable(linear) == 4 * 5 + 5


def test_hrnet_head_fuses_all_levels_at_the_first_resolution():
    levels = [keras.Input((None, None, c)) for c in (2, 4, 8)]
    model = keras.Model(levels, hrnet_head(levels, 3, name="normals"))
    # fuse 1x1 conv 14 -> 14 channels + BN, classifier 14 -> 3
    assert _trainable(model) == 14 * 14 + 28 + 14 * 3 + 3
    assert model.get_layer("normals_fuse_conv").filters == 14
    for size in (8, 12):
        inputs = [_x(2, size // s, size // s, c) for s, c in ((1, 2), (2, 4), (4, 8))]
        assert model.predict(inputs, verbose=0).shape == (2, size, size, 3)


def test_resize_like_is_pytorch_bilinear_without_align_corners():
    x = np.array([0.0, 1.0], "float32").reshape(1, 1, 2, 1)
    out = ResizeLike()([x, np.zeros((1, 1, 4, 7), "float32")])
    assert out.shape == (1, 1, 4, 1)
    # F.interpolate(size=4, mode="bilinear", align_corners=False): source x = (i + 0.5) / 2 - 0.5
    np.testing.assert_allclose(np.ravel(out), [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    nearest = ResizeLike(interpolation="nearest")([x, np.zeros((1, 1, 4, 1), "float32")])
    np.testing.assert_array_equal(np.ravel(nearest), [0, 0, 1, 1])


def test_resize_like_config_round_trip_and_validation():
    layer = ResizeLike(interpolation="nearest", name="up")
    config = layer.get_config()
    clone = ResizeLike.from_config(config)
    assert clone.get_config() == config and clone.interpolation == "nearest"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, ResizeLike) and restored.name == "up"
    with pytest.raises(ValueError, match="bilinear"):
        ResizeLike(interpolation="linear")


def test_heads_model_keras_file_round_trip(tmp_path):
    p2, p3 = keras.Input((None, None, 4)), keras.Input((None, None, 8))
    outputs = {
        "a": deeplab_head(p3, 2, name="a", rates=(1, 2), filters=4),
        "b": hrnet_head([p2, p3], 3, name="b"),
    }
    model = keras.Model([p2, p3], outputs)
    path = str(tmp_path / "heads.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    inputs = [_x(2, 8, 8, 4), _x(2, 4, 4, 8, seed=1)]
    expected, got = model(inputs), loaded(inputs)
    for k in outputs:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(expected[k]), atol=1e-6)


def test_registry():
    assert heads.HEADS == {"deeplab": deeplab_head, "conv": conv_head, "hrnet": hrnet_head}
    assert heads.get("hrnet") is hrnet_head
    with pytest.raises(ValueError, match="valid heads: deeplab, conv, hrnet"):
        heads.get("fpn")
