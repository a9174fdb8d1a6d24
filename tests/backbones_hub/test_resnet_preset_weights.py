"""keras-hub ResNet presets' weights in the project's dilated ResNet: a tiny keras-hub ResNet (one
block per stage, random BN statistics) written with save_to_preset, loaded layer by layer into
build_resnet; undilated, the pyramid equals keras-hub's. Nothing downloads."""

import keras
import keras_hub
import numpy as np
import pytest

from mtl_keras.backbones import resnet
from mtl_keras.backbones.weights import (
    backbone_variables,
    convert_keras_hub_resnet,
    copy_keras_hub_preset,
    keras_hub_resnet_to_keras,
    load_backbone_weights,
    load_keras_hub_resnet,
)

SIZE = 32
HUB = {
    "input_conv_filters": [64],
    "input_conv_kernel_sizes": [7],
    "stackwise_num_filters": [64, 128, 256, 512],  # keras-hub requires 64 first: width 64
    "stackwise_num_blocks": [1, 1, 1, 1],
    "stackwise_num_strides": [1, 2, 2, 2],
}
#: a one-block-per-stage bottleneck depth, registered only in the test that needs it
TINY_BOTTLENECK = 14


def _hub_resnet(block_type: str) -> keras.Model:
    """A tiny keras-hub ResNet v1 with random BN parameters and statistics (so that a swapped
    gamma/beta/mean/variance would show)."""
    keras.utils.set_random_seed(0)
    hub = keras_hub.models.ResNetBackbone(**HUB, block_type=block_type)
    rng = np.random.default_rng(0)
    for v in hub.weights:
        if v.name in ("gamma", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        elif v.name in ("beta", "moving_mean"):
            v.assign(rng.normal(0.0, 0.1, v.shape).astype("float32"))
    return hub


def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(2, SIZE, SIZE, 3)).astype("float32")


def _assert_same_pyramid(ours: keras.Model, hub: keras.Model) -> None:
    x = _images()
    want = keras.Model(hub.input, hub.pyramid_outputs)(x, training=False)
    got = ours(x, training=False)
    assert sorted(got) == sorted(want) == ["P2", "P3", "P4", "P5"]
    for level in want:
        np.testing.assert_allclose(np.asarray(got[level]), np.asarray(want[level]), atol=1e-5)


@pytest.mark.parametrize("block_type", ["basic_block", "bottleneck_block"])
def test_preset_weights_give_keras_hubs_pyramid_undilated(block_type, tmp_path, monkeypatch):
    if block_type == "bottleneck_block":
        monkeypatch.setitem(resnet.RESNET_SPECS, TINY_BOTTLENECK, ((1, 1, 1, 1), "bottleneck"))
    depth = 10 if block_type == "basic_block" else TINY_BOTTLENECK
    hub = _hub_resnet(block_type)
    folder = str(tmp_path / "preset")
    hub.save_to_preset(folder)

    ours = resnet.build_resnet(depth, output_stride=32)
    with pytest.raises(AssertionError):  # a fresh initialisation differs
        _assert_same_pyramid(ours, hub)
    assert load_keras_hub_resnet(ours, folder) == []  # every key and shape matched
    _assert_same_pyramid(ours, hub)

    # dilation changes no weight: the same arrays load into the dilated configurations
    npz = str(tmp_path / "weights.npz")
    assert convert_keras_hub_resnet(folder, npz) == depth
    dilated = resnet.build_resnet(depth, output_stride=8)
    assert load_backbone_weights(dilated, npz) == []
    for key, variable in backbone_variables(dilated).items():
        np.testing.assert_array_equal(
            np.asarray(variable), np.asarray(backbone_variables(ours)[key])
        )


def test_other_layouts_and_normalisations_are_refused(tmp_path):
    keras.utils.set_random_seed(0)
    v2 = keras_hub.models.ResNetBackbone(**HUB, block_type="basic_block", use_pre_activation=True)
    with pytest.raises(ValueError, match="use_pre_activation=True"):
        keras_hub_resnet_to_keras(v2)
    narrow = keras_hub.models.ResNetBackbone(
        **{**HUB, "stackwise_num_filters": [64, 8, 8, 8]}, block_type="basic_block"
    )
    with pytest.raises(ValueError, match=r"stackwise_num_filters \[64, 8, 8, 8\]"):
        keras_hub_resnet_to_keras(narrow)

    folder = str(tmp_path / "preset")
    _hub_resnet("basic_block").save_to_preset(folder)
    deeper = resnet.build_resnet(18)  # two blocks per stage: the preset has one
    with pytest.raises(ValueError, match="stage1_block2_conv1/kernel: missing"):
        load_keras_hub_resnet(deeper, folder)
    keras_hub.layers.ImageConverter(scale=1 / 127.5, offset=-1.0).save_to_preset(folder)
    copy = copy_keras_hub_preset(folder, str(tmp_path / "copy"))  # the converter travels along
    with pytest.raises(ValueError, match="normalised otherwise than with ImageNet"):
        load_keras_hub_resnet(resnet.build_resnet(10), copy)
