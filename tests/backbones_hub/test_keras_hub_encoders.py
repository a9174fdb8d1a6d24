"""keras-hub backbones as shared encoders: every family's pyramid, presets written here and loaded
back offline, the folded normalisation, ViT input sizes, and the architectures that take a
pyramid. Tiny backbones (hidden width 16, 1-2 layers, 32 px); nothing downloads."""

import keras
import keras_hub
import numpy as np
import pytest

from mtl_keras import architectures, backbones
from mtl_keras.architectures import ImageNormalization, sharing_of
from tests.utils import tiny_specs

SIZE = 32
VIT = {
    "patch_size": 8,
    "num_layers": 2,
    "num_heads": 2,
    "hidden_dim": 16,
    "mlp_dim": 32,
    "image_shape": (SIZE, SIZE, 3),
}
FAMILIES = {
    "ResNetBackbone": {
        "input_conv_filters": [64],
        "input_conv_kernel_sizes": [7],
        "stackwise_num_filters": [64, 8, 8, 8],
        "stackwise_num_blocks": [1, 1, 1, 1],
        "stackwise_num_strides": [1, 2, 2, 2],
        "block_type": "basic_block",
    },
    "ViTBackbone": VIT,
    "DINOV2Backbone": {
        "patch_size": 4,
        "num_layers": 2,
        "hidden_dim": 16,
        "num_heads": 2,
        "intermediate_dim": 32,
        "num_register_tokens": 2,
        "image_shape": (SIZE, SIZE, 3),
        "position_embedding_shape": (SIZE, SIZE, 3),
    },
    "SwinTransformerBackbone": {
        "image_shape": (SIZE, SIZE, 3),
        "embed_dim": 8,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "window_size": 1,
        "patch_size": 4,
        "drop_path": 0.0,
    },
}
#: spatial side of P2..P5 at 32 px
SIDES = {
    "ResNetBackbone": (8, 4, 2, 1),
    "ViTBackbone": (16, 8, 4, 2),  # patch 8: reassembled at 4x, 2x, 1x, 1/2x the patch grid
    "DINOV2Backbone": (32, 16, 8, 4),
    "SwinTransformerBackbone": (8, 4, 2, 1),
}


def _images(n=2, size=(SIZE, SIZE), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3)).astype("uint8")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_gives_a_pyramid(family):
    keras.utils.set_random_seed(0)
    encoder = backbones.get(f"keras_hub.{family}", **FAMILIES[family])
    pyramid = encoder(ImageNormalization()(_images()))
    assert sorted(pyramid) == ["P2", "P3", "P4", "P5"]
    sides = tuple(pyramid[f"P{k}"].shape[1] for k in range(2, 6))
    assert sides == SIDES[family]
    assert all(np.isfinite(np.asarray(v)).all() for v in pyramid.values())


def test_unknown_class_and_missing_size_are_explained():
    with pytest.raises(ValueError, match="'NoSuchBackbone' is not a keras-hub backbone class"):
        backbones.get("keras_hub.NoSuchBackbone")
    with pytest.raises(ValueError, match="keras_hub.<Class>"):
        backbones.get("vit_tiny")
    encoder = backbones.get("keras_hub.ViTBackbone", **VIT)
    with pytest.raises(ValueError, match=r"needs a fixed input size.*image_size=\(H, W\)"):
        encoder(keras.Input((None, None, 3)))


def test_sizes_off_the_patch_grid_name_the_nearest_valid_ones():
    encoder = backbones.get("keras_hub.ViTBackbone", **VIT)
    with pytest.raises(
        ValueError, match=r"multiples of 8.*30x32 \(height 30: nearest valid 24 or 32"
    ):
        encoder(keras.Input((30, 32, 3)))


@pytest.fixture(scope="module")
def resnet_preset(tmp_path_factory):
    """A tiny keras-hub ResNet and its ImageConverter (not ImageNet's convention) in a folder."""
    folder = str(tmp_path_factory.mktemp("resnet_preset"))
    keras.utils.set_random_seed(1)
    hub = keras_hub.models.ResNetBackbone(**FAMILIES["ResNetBackbone"])
    hub.save_to_preset(folder)
    converter = keras_hub.layers.ImageConverter(scale=1 / 127.5, offset=-1.0)
    converter.save_to_preset(folder)
    return folder, hub, converter


def test_preset_folds_its_normalisation_into_the_encoder(resnet_preset):
    """Raw pixels -> ImageNet normalisation -> encoder equals raw -> preset converter -> hub."""
    folder, hub, converter = resnet_preset
    encoder = backbones.get(f"preset:{folder}")
    assert encoder.normalization == {"scale": converter.scale, "offset": converter.offset}
    raw = _images(seed=3)
    got = encoder(ImageNormalization()(raw))
    want = keras.Model(hub.inputs, hub.pyramid_outputs)(raw.astype("float32") / 127.5 - 1.0)
    for level, key in zip(("P2", "P3", "P4", "P5"), ("P2", "P3", "P4", "P5")):
        np.testing.assert_allclose(np.asarray(got[level]), np.asarray(want[key]), atol=1e-4)


def test_preset_trains_offline_in_an_architecture_and_round_trips(resnet_preset, tmp_path):
    folder, _, _ = resnet_preset
    specs = list(tiny_specs(("semseg", "depth")).values())
    net = architectures.build(
        "hard_sharing",
        specs,
        backbone=f"preset:{folder}",
        head="conv",
        head_kwargs={"filters": 8, "num_convs": 1},
        image_size=(SIZE, SIZE),
    )
    assert len(sharing_of(net).representation_layers) == 1
    path = str(tmp_path / "net.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    raw = _images(seed=4)
    for k, v in net(raw).items():
        np.testing.assert_allclose(np.asarray(loaded(raw)[k]), np.asarray(v), atol=1e-5)


def test_vit_preset_runs_at_another_size_with_resized_position_embeddings(tmp_path):
    keras.utils.set_random_seed(2)
    hub = keras_hub.models.ViTBackbone(**VIT)
    hub.save_to_preset(str(tmp_path))
    encoder = backbones.get(f"preset:{tmp_path}")
    pyramid = encoder(keras.Input((48, 64, 3)))
    assert pyramid["P4"].shape[1:3] == (6, 8)  # 48x64 / patch 8
    (src,) = [v for v in hub.weights if "position_embedding" in v.path]
    (dst,) = [v for v in encoder.weights if "position_embedding" in v.path]
    src, dst = np.asarray(src), np.asarray(dst)
    assert src.shape == (1 + 4 * 4, 16) and dst.shape == (1 + 6 * 8, 16)
    np.testing.assert_array_equal(dst[0], src[0])  # the class token's embedding is kept
    grid = keras.ops.image.resize(src[1:].reshape(1, 4, 4, 16), (6, 8), interpolation="bilinear")
    np.testing.assert_allclose(dst[1:], np.asarray(grid).reshape(48, 16), atol=1e-6)
    # at the preset's own size the weights are copied unchanged
    same = backbones.get(f"preset:{tmp_path}")
    same(keras.Input((SIZE, SIZE, 3)))
    for a, b in zip(hub.weights, [w for w in same.weights if "reassemble" not in w.path]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "arch,head_kwargs",
    [("mtinet", {"fpn_channels": 8}), ("padnet", {"channels": 8}), ("jtrl", {"channels": 8})],
)
def test_pyramid_architectures_take_a_vit_encoder(arch, head_kwargs):
    specs = tiny_specs(("semseg", "depth"))
    net = architectures.build(
        arch,
        list(specs.values()),
        backbone="keras_hub.ViTBackbone",
        backbone_kwargs=VIT,
        head="hrnet",
        head_kwargs=head_kwargs,
        image_size=(SIZE, SIZE),
    )
    out = net(_images())
    for t, s in specs.items():
        assert tuple(out[t].shape) == (2, SIZE, SIZE, s.channels)
    assert sharing_of(net).shared_variables
