"""ResNet backbones: pyramid shapes, exact parameter counts, dilation, PyTorch padding, sync BN,
serialisation and the ``.npz`` weights files."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import backbones
from mtl_keras.backbones import (
    build_resnet,
    convert_torchvision_resnet,
    load_backbone_weights,
    pyramid_channels,
    pyramid_strides,
    save_backbone_weights,
    torchvision_resnet_to_keras,
)
from tests.utils import two_replicas


def _images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


# --- architecture -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth, output_stride, expected",
    [
        # 64 px input, width 8: spatial size 64 / stride, channels 8 * 2^i (x4 for bottleneck)
        (18, 32, {"P2": (16, 16, 8), "P3": (8, 8, 16), "P4": (4, 4, 32), "P5": (2, 2, 64)}),
        (18, 16, {"P2": (16, 16, 8), "P3": (8, 8, 16), "P4": (4, 4, 32), "P5": (4, 4, 64)}),
        (18, 8, {"P2": (16, 16, 8), "P3": (8, 8, 16), "P4": (8, 8, 32), "P5": (8, 8, 64)}),
        (50, 8, {"P2": (16, 16, 32), "P3": (8, 8, 64), "P4": (8, 8, 128), "P5": (8, 8, 256)}),
    ],
)
def test_pyramid_shapes(depth, output_stride, expected):
    model = build_resnet(depth, output_stride=output_stride, width=8)  # dynamic (None, None, 3)
    out = _numpy(model(_images(), training=False))
    assert {k: v.shape[1:] for k, v in out.items()} == expected
    strides = pyramid_strides(output_stride)
    channels = pyramid_channels(depth, 8)
    assert {k: (64 // strides[k], 64 // strides[k], channels[k]) for k in expected} == expected


def test_pyramid_strides_and_channels_tables():
    assert pyramid_strides(32) == {"P2": 4, "P3": 8, "P4": 16, "P5": 32}
    assert pyramid_strides(16) == {"P2": 4, "P3": 8, "P4": 16, "P5": 16}
    assert pyramid_strides(8) == {"P2": 4, "P3": 8, "P4": 8, "P5": 8}
    assert pyramid_channels(18) == {"P2": 64, "P3": 128, "P4": 256, "P5": 512}
    assert pyramid_channels(101) == {"P2": 256, "P3": 512, "P4": 1024, "P5": 2048}


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize(
    "name, trainable, non_trainable",
    # torchvision's totals (11,689,512 and 25,557,032) minus the 1000-way classifier;
    # non-trainable: moving mean and variance of every BN channel (4,800 and 26,560 channels)
    [("resnet18", 11_176_512, 9_600), ("resnet50", 23_508_032, 53_120)],
)
def test_imagenet_parameter_counts_for_every_output_stride(name, trainable, non_trainable):
    for output_stride in (32, 8):
        model = backbones.get(name, output_stride=output_stride)
        assert _trainable(model) == trainable
        assert model.count_params() == trainable + non_trainable


def _dilations(model, suffix):
    return {
        layer.name.removesuffix(suffix): (layer.strides, layer.dilation_rate)
        for layer in model.layers
        if layer.name.endswith(suffix)
    }


def test_dilation_follows_the_survey_nostride_dilate_bottleneck():
    # The survey's ``_nostride_dilate(m, d)``: a stride-2 3x3 conv becomes stride 1 with dilation
    # d // 2; every other 3x3 conv of the stage gets dilation d (layer3 d = 2, layer4 d = 4).
    model = build_resnet(50, output_stride=8, width=4)
    conv2 = _dilations(model, "_conv2")
    assert conv2["stage2_block1"] == ((2, 2), (1, 1))  # v1.5: stride on the 3x3
    assert conv2["stage3_block1"] == ((1, 1), (1, 1))  # the formerly strided 3x3: 2 // 2
    assert conv2["stage3_block2"] == ((1, 1), (2, 2))
    assert conv2["stage4_block1"] == ((1, 1), (2, 2))  # 4 // 2
    assert conv2["stage4_block3"] == ((1, 1), (4, 4))
    assert model.get_layer("stage4_block3_conv2_pad").padding == ((4, 4), (4, 4))
    assert model.get_layer("stage1_block1_shortcut_conv").strides == (1, 1)
    # 1x1 convolutions are never dilated (the rule only touches 3x3 kernels)
    assert {layer.dilation_rate for layer in model.layers if layer.name.endswith("_conv1")} == {
        (1, 1)
    }


@pytest.mark.parametrize(
    "output_stride, expected",
    [
        # {layer: (conv1 dilation, conv2 dilation)} of basic blocks under _nostride_dilate:
        # conv1 carries the stride (d // 2 in the first block), conv2 always gets d
        (8, {"stage3_block1": (1, 2), "stage3_block2": (2, 2), "stage4_block1": (2, 4),
             "stage4_block2": (4, 4), "stage2_block1": (1, 1)}),
        (16, {"stage3_block1": (1, 1), "stage4_block1": (1, 2), "stage4_block2": (2, 2)}),
    ],
)  # fmt: skip
def test_dilation_rates_of_every_basic_block_layer(output_stride, expected):
    model = build_resnet(18, output_stride=output_stride, width=4)
    conv1, conv2 = _dilations(model, "_conv1"), _dilations(model, "_conv2")
    for block, (d1, d2) in expected.items():
        assert conv1[block][1] == (d1, d1), block
        assert conv2[block][1] == (d2, d2), block
    assert conv1["stage2_block1"][0] == (2, 2)
    padding = model.get_layer("stage4_block1_conv2_pad").padding
    assert padding == ((expected["stage4_block1"][1],) * 2,) * 2  # 3x3, pad = dilation


def test_layer_names_and_batchnorm_settings():
    model = build_resnet(18, width=8)
    for name in (
        "stem_conv",
        "stem_bn",
        "stage2_block1_conv1",
        "stage2_block1_bn1",
        "stage2_block1_shortcut_conv",
        "stage2_block1_shortcut_bn",
        "stage4_block2_out",
    ):
        model.get_layer(name)
    names = [layer.name for layer in model.layers]
    assert "stage1_block1_shortcut_conv" not in names  # basic stage 1 keeps its shape
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(bns) == len(convs) == 20  # 1 + 8 blocks x 2 + 3 shortcuts
    assert all(not c.use_bias for c in convs)
    assert {(b.epsilon, b.momentum, b.synchronized) for b in bns} == {(1e-5, 0.9, True)}
    unsynced = build_resnet(18, width=8, sync_batchnorm=False)
    assert not any(getattr(layer, "synchronized", False) for layer in unsynced.layers)


def test_invalid_arguments_list_valid_values():
    with pytest.raises(ValueError, match=r"depth 20.*\[10, 18, 34, 50, 101\]"):
        build_resnet(20)
    with pytest.raises(ValueError, match=r"output_stride 4.*\[8, 16, 32\]"):
        build_resnet(18, output_stride=4)
    with pytest.raises(ValueError, match="resnet10, resnet18, resnet34, resnet50, resnet101"):
        backbones.get("resnet152")


def _torch_conv(x, w_hwio, stride, pad, dilation=1):
    """PyTorch ``conv2d`` (cross-correlation, symmetric zero padding) on NHWC numpy arrays."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = w_hwio.shape[0]
    span = dilation * (k - 1) + 1
    oh = (x.shape[1] - span) // stride + 1
    ow = (x.shape[2] - span) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, w_hwio.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = x[:, i * dilation :, j * dilation :][
                :, : oh * stride : stride, : ow * stride : stride
            ]
            out += patch[:, :oh, :ow] @ w_hwio[i, j]
    return out


def _torch_max_pool(x, size=3, stride=2, pad=1):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    oh, ow = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    windows = [
        x[:, i : i + stride * oh : stride, j : j + stride * ow : stride]
        for i in range(size)
        for j in range(size)
    ]
    return np.max(windows, axis=0)


@pytest.mark.parametrize(
    "layer, stride, pad, dilation",
    [("stem_conv", 2, 3, 1), ("stage2_block1_conv1", 2, 1, 1), ("stage3_block2_conv1", 1, 2, 2)],
)
def test_convolutions_pad_like_pytorch(layer, stride, pad, dilation):
    """Odd input (37 px): Keras "same" would pad asymmetrically; PyTorch pads both sides."""
    model = build_resnet(18, output_stride=8, width=4)
    conv = model.get_layer(layer)
    probe = keras.Model(model.input, [model.get_layer(f"{layer}_pad").input, conv.output])
    x_in, y = probe(_images(size=37), training=False)
    expected = _torch_conv(np.asarray(x_in), np.asarray(conv.kernel), stride, pad, dilation)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4)


def test_stem_max_pool_matches_pytorch():
    model = build_resnet(18, width=4)
    probe = keras.Model(
        model.input, [model.get_layer("stem_relu").output, model.get_layer("stem_pool").output]
    )
    x, y = probe(_images(size=37), training=False)
    np.testing.assert_allclose(np.asarray(y), _torch_max_pool(np.asarray(x)), atol=1e-6)


def test_sync_batchnorm_uses_global_batch_statistics():
    """Two replicas with one image each: synced BN equals BN on the whole batch of two.

    Compared at P2 (stem and stage 1: 128 to 512 values per channel statistic), where the
    float32 rounding of E[x^2] - E[x]^2 (synced) versus two-pass variance (local) stays small.
    """
    keras.utils.set_random_seed(0)
    images = _images(n=2, size=32)
    reference = build_resnet(18, width=4, sync_batchnorm=False)
    expected = np.asarray(reference(images, training=True)["P2"])

    strategy = two_replicas()
    with strategy.scope():
        model = build_resnet(18, width=4, sync_batchnorm=True)
        model.set_weights(reference.get_weights())
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: images[ctx.replica_id_in_sync_group][None]
    )
    out = strategy.run(tf.function(lambda x: model(x, training=True)["P2"]), args=(per_replica,))
    synced = np.concatenate(strategy.experimental_local_results(out))
    np.testing.assert_allclose(synced, expected, rtol=1e-4, atol=1e-4)
    # what each replica would compute with its own statistics (unsynchronised BN)
    local = np.concatenate([reference(images[i : i + 1], training=True)["P2"] for i in (0, 1)])
    assert np.abs(local - expected).max() > 1e-2


def test_keras_file_round_trip(tmp_path):
    model = build_resnet(18, output_stride=16, width=4, name="tiny")
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _images(size=32)
    expected, got = _numpy(model(x, training=False)), _numpy(loaded(x, training=False))
    assert loaded.name == "tiny" and sorted(got) == ["P2", "P3", "P4", "P5"]
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])


# --- weights files ------------------------------------------------------------------------------


def test_save_and_load_weights_reproduce_outputs(tmp_path):
    source = build_resnet(18, width=4)
    path = str(tmp_path / "w.npz")
    save_backbone_weights(source, path)
    assert os.listdir(tmp_path) == ["w.npz"]  # no temporary file left behind
    with np.load(path) as data:
        assert data["stem_conv/kernel"].shape == (7, 7, 3, 4)  # HWIO
        assert data["stem_bn/moving_mean"].shape == (4,)
        assert data["stage2_block1_conv1/kernel"].shape == (3, 3, 4, 8)
        assert len(data.files) == len(source.weights)

    target = build_resnet(18, width=4, output_stride=32)
    x = _images(size=32)
    assert not np.allclose(target(x)["P5"], source(x)["P5"])
    assert load_backbone_weights(target, path) == []
    for k, v in _numpy(source(x, training=False)).items():
        np.testing.assert_array_equal(np.asarray(target(x, training=False)[k]), v)


def test_load_errors_name_path_key_and_shapes(tmp_path):
    path = str(tmp_path / "w8.npz")
    save_backbone_weights(build_resnet(18, width=8), path)
    target = build_resnet(18, width=4)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError) as err:
        load_backbone_weights(target, path)
    message = str(err.value)
    assert path in message and "stem_conv/kernel" in message
    assert "(7, 7, 3, 4)" in message and "(7, 7, 3, 8)" in message
    for a, b in zip(before, target.get_weights(), strict=True):  # nothing was assigned
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ValueError, match=r"does not exist"):
        load_backbone_weights(target, str(tmp_path / "absent.npz"))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"corrupt\.npz.*not a readable \.npz"):
        load_backbone_weights(target, str(corrupt))


def test_missing_and_unexpected_keys(tmp_path):
    model = build_resnet(18, width=4)
    path = str(tmp_path / "w.npz")
    save_backbone_weights(model, path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.pop("stem_bn/gamma")
    arrays["head/kernel"] = np.zeros((1, 1, 4, 2), "float32")
    arrays["stage1_block1_bn1/beta"] = np.full(4, 7.0, "float32")
    edited = str(tmp_path / "edited.npz")
    np.savez(edited, **arrays)

    fresh = build_resnet(18, width=4)
    with pytest.raises(ValueError) as err:
        load_backbone_weights(fresh, edited)
    assert "stem_bn/gamma: missing" in str(err.value)
    assert "head/kernel: unexpected" in str(err.value)

    skipped = load_backbone_weights(fresh, edited, skip_mismatch=True)
    assert skipped == ["head/kernel", "stem_bn/gamma"]
    np.testing.assert_array_equal(fresh.get_layer("stage1_block1_bn1").beta, np.full(4, 7.0))
    np.testing.assert_array_equal(fresh.get_layer("stem_bn").gamma, np.ones(4))  # untouched


def _fake_torchvision_state_dict(depth, width, seed=0):
    """A torchvision ResNet ``state_dict`` layout (OIHW kernels) filled with random numbers."""
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(key, o, i, k):
        sd[f"{key}.weight"] = rng.normal(size=(o, i, k, k)).astype("float32")

    def bn(key, c):
        for p in ("weight", "bias", "running_mean"):
            sd[f"{key}.{p}"] = rng.normal(size=c).astype("float32")
        sd[f"{key}.running_var"] = rng.uniform(0.5, 2.0, size=c).astype("float32")
        sd[f"{key}.num_batches_tracked"] = np.array(100)

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    inplanes = width
    for s, n in enumerate(blocks, start=1):
        planes = width * 2 ** (s - 1)
        for b in range(n):
            p = f"layer{s}.{b}"
            if depth == 18:
                out = planes
                conv(f"{p}.conv1", planes, inplanes, 3), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            else:
                out = 4 * planes
                conv(f"{p}.conv1", planes, inplanes, 1), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", out, planes, 1), bn(f"{p}.bn3", out)
            if b == 0 and (s > 1 or inplanes != out):
                conv(f"{p}.downsample.0", out, inplanes, 1), bn(f"{p}.downsample.1", out)
            inplanes = out
    sd["fc.weight"] = np.zeros((10, inplanes), "float32")
    sd["fc.bias"] = np.zeros(10, "float32")
    return sd


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_mapping_loads_into_backbone(tmp_path, depth):
    sd = _fake_torchvision_state_dict(depth, width=4)
    arrays = torchvision_resnet_to_keras(sd, depth)
    np.testing.assert_array_equal(
        arrays["stem_conv/kernel"][2, 5, 1], sd["conv1.weight"][:, 1, 2, 5]
    )
    np.testing.assert_array_equal(
        arrays["stage2_block1_shortcut_bn/moving_variance"], sd["layer2.0.downsample.1.running_var"]
    )
    np.testing.assert_array_equal(
        arrays["stage3_block2_conv2/kernel"][0, 1, 3, 2], sd["layer3.1.conv2.weight"][2, 3, 0, 1]
    )
    path = str(tmp_path / "converted.npz")
    np.savez(path, **arrays)
    model = build_resnet(depth, width=4, output_stride=8)
    assert load_backbone_weights(model, path) == []  # every key and shape matched
    np.testing.assert_array_equal(model.get_layer("stem_bn").moving_mean, sd["bn1.running_mean"])


def test_torchvision_mapping_rejects_wrong_depth():
    with pytest.raises(ValueError, match=r"resnet34.*missing keys \['layer1\.2\.bn1\.bias'"):
        torchvision_resnet_to_keras(_fake_torchvision_state_dict(18, width=4), 34)


def test_convert_without_torch_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="pip install torch"):
        convert_torchvision_resnet("resnet18.pth", 18, str(tmp_path / "out.npz"))
