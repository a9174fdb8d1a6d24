"""HRNet-W18 small v2: pyramid, exact parameter count from the published config, layer layout,
serialisation, ``.npz`` weights, the PyTorch checkpoint mapping, and use in an architecture."""

import keras
import numpy as np
import pytest

from mtl_keras import backbones
from mtl_keras.architectures import build_cross_stitch
from mtl_keras.backbones import (
    build_hrnet,
    hrnet_pyramid_channels,
    hrnet_torch_to_keras,
    load_backbone_weights,
    save_backbone_weights,
)
from mtl_keras.backbones.hrnet import hrnet_torch_keys
from mtl_keras.heads import ResizeLike
from tests.utils import tiny_specs


def _images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


TINY = {"width": 4, "stem_width": 8, "config": "tiny"}


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_hrnet(**TINY)


@pytest.fixture(scope="module")
def hrnet18():
    return backbones.get("hrnet18")


def _published_small_v2_params(width=18, stem=64):
    """Trainable parameters of hrnet_w18_small_model_v2 without the classifier, by hand:
    stem 2x(3x3 conv + BN); stage 1: 2 bottlenecks (64 -> 256); stages 2/3/4: transitions, then
    1/3/2 modules of 2 basic blocks per branch and the all-to-all fuse. BN has 2 per channel."""
    conv = lambda k, cin, cout: k * k * cin * cout  # noqa: E731
    total = conv(3, 3, stem) + 2 * stem + conv(3, stem, stem) + 2 * stem
    cin = stem
    for block in range(2):
        total += conv(1, cin, stem) + conv(3, stem, stem) + conv(1, stem, 4 * stem)
        total += 2 * (stem + stem + 4 * stem)
        if block == 0:
            total += conv(1, cin, 4 * stem) + 2 * 4 * stem
        cin = 4 * stem
    previous = [4 * stem]
    for branches, modules in ((2, 1), (3, 3), (4, 2)):
        cur = [width * 2**i for i in range(branches)]
        for i, c in enumerate(cur):  # transition
            if i >= len(previous):
                total += conv(3, previous[-1], c) + 2 * c
            elif previous[i] != c:
                total += conv(3, previous[i], c) + 2 * c
        for _ in range(modules):
            total += sum(2 * 2 * (conv(3, c, c) + 2 * c) for c in cur)  # 2 basic blocks
            for i in range(branches):
                for j in range(branches):
                    if j > i:
                        total += conv(1, cur[j], cur[i]) + 2 * cur[i]
                    for k in range(i - j):  # j < i: strided 3x3 chain
                        out = cur[i] if k == i - j - 1 else cur[j]
                        total += conv(3, cur[j], out) + 2 * out
        previous = cur
    return total


def test_pyramid_shapes_and_strides(tiny):
    out = {k: np.asarray(v) for k, v in tiny(_images(), training=False).items()}
    assert {k: v.shape[1:] for k, v in out.items()} == {
        "P2": (16, 16, 4),
        "P3": (8, 8, 8),
        "P4": (4, 4, 16),
        "P5": (2, 2, 32),
    }
    assert hrnet_pyramid_channels(18) == {"P2": 18, "P3": 36, "P4": 72, "P5": 144}


def test_small_v2_parameter_count_matches_the_published_config(hrnet18):
    model = hrnet18
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == _published_small_v2_params() == 3_860_720
    assert model.count_params() - trainable == 15_948  # BN moving mean and variance
    assert model.name == "hrnet18"


def test_module_layout_follows_small_v2(hrnet18, tiny):
    names = {layer.name for layer in hrnet18.layers}
    blocks = {
        s: sum(
            f"stage{s}_module{m}_branch{i}_block{b}_conv1" in names
            for m in range(1, 5)
            for i in range(1, 5)
            for b in range(1, 5)
        )
        for s in (2, 3, 4)
    }
    assert blocks == {2: 1 * 2 * 2, 3: 3 * 3 * 2, 4: 2 * 4 * 2}  # modules x branches x blocks
    assert "stage1_block2_conv3" in names and "stage1_block3_conv1" not in names
    assert isinstance(hrnet18.get_layer("stage4_module2_fuse1_4_up"), ResizeLike)
    down = hrnet18.get_layer("stage4_module2_fuse4_1_down3_conv")
    assert down.strides == (2, 2) and down.kernel.shape == (3, 3, 18, 144)
    assert hrnet18.get_layer("stage4_module2_fuse4_1_down2_relu")  # ReLU between chained convs
    assert hrnet18.get_layer("stage1_output1").output.shape[-1] == 256  # 4 x stem_width
    assert tiny.get_layer("stage1_output1").output.shape[-1] == 32
    bns = [layer for layer in hrnet18.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(b.epsilon, b.momentum) for b in bns} == {(1e-5, 0.99)}  # PyTorch momentum 0.01


def test_keras_round_trip_and_npz_weights(tiny, tmp_path):
    x = _images(size=32)
    path = str(tmp_path / "hrnet.keras")
    tiny.save(path)
    loaded = keras.saving.load_model(path)
    for key, value in tiny(x, training=False).items():
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)[key]), np.asarray(value))
    weights = str(tmp_path / "hrnet.npz")
    save_backbone_weights(tiny, weights)
    fresh = build_hrnet(**TINY)
    assert load_backbone_weights(fresh, weights) == []
    np.testing.assert_array_equal(
        np.asarray(fresh(x, training=False)["P3"]), np.asarray(tiny(x, training=False)["P3"])
    )


def test_pytorch_checkpoint_mapping(tiny, hrnet18, tmp_path):
    full = hrnet_torch_keys(hrnet18)
    # HRNet-Image-Classification's module names (0-based, nn.Sequential indices)
    assert full["stage3_module3_fuse3_1_down2_bn/gamma"] == "stage3.2.fuse_layers.2.0.1.1.weight"
    assert full["stage4_module2_fuse1_4_conv/kernel"] == "stage4.1.fuse_layers.0.3.0.weight"
    assert (
        full["stage4_module2_branch4_block2_conv2/kernel"] == "stage4.1.branches.3.1.conv2.weight"
    )
    assert len(set(full.values())) == len(full) == len(hrnet18.weights)
    keys = hrnet_torch_keys(tiny)
    assert keys["stem_conv2/kernel"] == "conv2.weight"
    assert keys["stage1_block1_shortcut_conv/kernel"] == "layer1.0.downsample.0.weight"
    assert keys["transition1_branch1_bn/moving_variance"] == "transition1.0.1.running_var"
    assert keys["transition1_branch2_down1_conv/kernel"] == "transition1.1.0.0.weight"
    # a fake checkpoint in PyTorch layout, with the ImageNet classifier and BN counters
    source = build_hrnet(**TINY)
    rng = np.random.default_rng(0)
    for v in source.weights:
        v.assign(rng.uniform(0.5, 1.5, size=v.shape).astype("float32"))
    by_key = {f"{layer.name}/{w.name}": w for layer in source.layers for w in layer.weights}
    state = {}
    for keras_key, torch_key in keys.items():
        array = np.asarray(by_key[keras_key])
        state[torch_key] = np.transpose(array, (3, 2, 0, 1)) if array.ndim == 4 else array
    state["conv1.num_batches_tracked"] = np.array(7)
    state["classifier.weight"] = np.zeros((1000, 2048), "float32")
    state["final_layer.0.weight"] = np.zeros((2048, 1024, 1, 1), "float32")
    path = str(tmp_path / "converted.npz")
    np.savez(path, **hrnet_torch_to_keras(state, tiny))
    target = build_hrnet(**TINY)
    assert load_backbone_weights(target, path) == []
    x = _images(size=32)
    np.testing.assert_allclose(
        np.asarray(target(x, training=False)["P5"]),
        np.asarray(source(x, training=False)["P5"]),
        rtol=1e-5,
    )
    del state["stage2.0.fuse_layers.1.0.0.1.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['stage2\.0\.fuse_layers\.1\.0\.0\.1"):
        hrnet_torch_to_keras(state, tiny)


def test_cross_stitch_on_hrnet_mixes_every_branch(tiny):
    specs = list(tiny_specs(("semseg", "depth")).values())
    network = build_cross_stitch(specs, backbone=tiny, head="hrnet", image_size=(32, 32))
    units = sorted(layer.name for layer in network.layers if "cross_stitch" in layer.name)
    assert units == ["cross_stitch_stage1"] + [
        f"cross_stitch_stage{s}_branch{i}" for s in (2, 3, 4) for i in range(1, s + 1)
    ]
    out = network(np.zeros((1, 32, 32, 3), "float32"), training=False)
    assert out["semseg"].shape == (1, 32, 32, 5) and out["depth"].shape == (1, 32, 32, 1)
    # the columns are copies of the given backbone, weights included
    column = network.get_layer("depth_stage4").get_layer("stage4_module1_fuse1_2_conv")
    np.testing.assert_array_equal(
        column.kernel.numpy(), tiny.get_layer("stage4_module1_fuse1_2_conv").kernel.numpy()
    )


def test_invalid_arguments():
    with pytest.raises(ValueError, match="valid configs: small_v2, full"):
        build_hrnet(config="w48")
    with pytest.raises(ValueError, match="width=18, stem_width=64"):
        build_hrnet(width=0)
