"""keras-hub ResNet presets' weights in the project's dilated ResNet: a tiny keras-hub ResNet (one
block per stage, random BN statistics) written with save_to_preset, loaded layer by layer into
build_resnet; undilated, the pyramid equals keras-hub's. A recipe's ``backbone_weights`` (the
preset folder or an .npz) starts every ResNet copy of the built network from them. Nothing
downloads."""

import dataclasses

import keras
import keras_hub
import numpy as np
import pytest

from mtl_keras.architectures._blocks import STAGES
from mtl_keras.backbones import resnet
from mtl_keras.backbones.weights import (
    backbone_variables,
    convert_keras_hub_resnet,
    copy_keras_hub_preset,
    keras_hub_resnet_to_keras,
    load_backbone_weights,
    load_keras_hub_resnet,
    save_backbone_weights,
)
from mtl_keras.training import building
from mtl_keras.training.recipe import Recipe
from mtl_keras.training.resume import fingerprint

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


#: a two-task recipe on the synthetic scenes with the tiny preset's ResNet-10 (width 64, as
#: keras-hub's ResNets), dilated to output stride 8, and small conv heads
RECIPE = {
    "name": "pretrained",
    "tasks": ("semseg", "depth"),
    "image_size": (SIZE, SIZE),
    "train_examples": 2,
    "val_examples": 2,
    "batch_size": 2,
    "backbone": "resnet10",
    "backbone_kwargs": {"output_stride": 8},
    "head": "conv",
    "head_kwargs": {"filters": 8, "num_convs": 1},
    "image_summaries": 0,
}


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    """The tiny basic-block keras-hub ResNet's preset folder and its weights under our keys."""
    hub = _hub_resnet("basic_block")
    folder = str(tmp_path_factory.mktemp("hub") / "preset")
    hub.save_to_preset(folder)
    return folder, keras_hub_resnet_to_keras(hub)


def _assert_holds(variables: dict, arrays: dict) -> None:
    assert sorted(variables) == sorted(arrays)
    for key, array in arrays.items():
        np.testing.assert_array_equal(np.asarray(variables[key]), array, err_msg=key)


def _column_variables(network: keras.Model, task: str) -> dict:
    """The variables of ``task``'s ResNet column (its nested stage models) by file key."""
    stages = [
        layer
        for layer in network.layers
        if isinstance(layer, keras.Model) and layer.name in {f"{task}_{s}" for s in STAGES}
    ]
    assert len(stages) == len(STAGES)
    return {
        f"{lay.name}/{v.name}": v for stage in stages for lay in stage.layers for v in lay.weights
    }


def _layout(network: keras.Model) -> list:
    return [(v.path, tuple(v.shape)) for v in network.weights]


def test_recipe_starts_the_resnet_from_a_preset_folder(tiny_preset):
    folder, arrays = tiny_preset
    recipe = Recipe(**RECIPE).with_overrides([f"backbone_weights={folder}"])
    # recorded with the run (recipe.json, the HParams) and part of what a resume must match
    assert recipe.to_dict()["backbone_weights"] == folder
    assert fingerprint(recipe)["backbone_weights"] == folder
    assert recipe.with_overrides(["backbone_weights=null"]).backbone_weights is None

    specs = building.task_specs(recipe)
    model = building.build_model(recipe, specs, steps=1)  # the trainer a run fits, untrained
    _assert_holds(backbone_variables(model.network.get_layer("resnet10")), arrays)

    scratch = building.build_network(recipe, specs, backbone_weights=False)
    assert _layout(scratch) == _layout(model.network)  # the same variables: checkpoints fit both
    stem = backbone_variables(scratch.get_layer("resnet10"))["stem_conv/kernel"]
    assert not np.array_equal(np.asarray(stem), arrays["stem_conv/kernel"])


def test_recipe_starts_mtans_resnet_from_an_npz(tiny_preset, tmp_path):
    folder, arrays = tiny_preset
    npz = str(tmp_path / "resnet10.npz")
    convert_keras_hub_resnet(folder, npz)
    recipe = Recipe(**RECIPE, architecture="mtan", backbone_weights=npz)
    network = building.build_network(recipe, building.task_specs(recipe))
    _assert_holds(backbone_variables(network.get_layer("resnet10")), arrays)


def test_every_cross_stitch_column_gets_the_weights(tmp_path):
    # an .npz of save_backbone_weights: a narrow ResNet-10 with random weights and BN statistics
    keras.utils.set_random_seed(1)
    source = resnet.build_resnet(10, width=8)
    rng = np.random.default_rng(1)
    for v in source.weights:
        low = 0.5 if v.name in ("gamma", "moving_variance") else -0.5
        v.assign(rng.uniform(low, low + 1.0, v.shape).astype("float32"))
    npz = str(tmp_path / "narrow.npz")
    save_backbone_weights(source, npz)
    arrays = dict(np.load(npz))
    tiny = {**RECIPE, "backbone_kwargs": {"width": 8, "output_stride": 8}}
    recipe = Recipe(**tiny, architecture="cross_stitch", backbone_weights=npz)
    specs = building.task_specs(recipe)
    network = building.build_network(recipe, specs)
    columns = {t: _column_variables(network, t) for t in recipe.tasks}
    for variables in columns.values():
        _assert_holds(variables, arrays)
    ids = [{id(v) for v in variables.values()} for variables in columns.values()]
    assert not ids[0] & ids[1]  # each task's column has its own variables, not shared ones

    scratch = building.build_network(recipe, specs, backbone_weights=False)
    assert _layout(scratch) == _layout(network)
    path = str(tmp_path / "network.weights.h5")
    network.save_weights(path)
    scratch.load_weights(path)  # a checkpoint of the pretrained network loads into a fresh one
    _assert_holds(_column_variables(scratch, "depth"), arrays)

    wide = dataclasses.replace(recipe, backbone_kwargs={"output_stride": 8})  # width 64
    with pytest.raises(ValueError, match=r"(?s)do not fit backbone 'resnet10'.*shape mismatch"):
        building.build_network(wide, specs)


def test_backbone_weights_errors_name_the_problem_and_the_fix(tiny_preset, tmp_path):
    folder, _ = tiny_preset
    with pytest.raises(ValueError, match=r"backbone_weights '.*nowhere' does not exist; give a"):
        Recipe(**RECIPE, backbone_weights=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"not downloaded during a run.*copy_keras_hub_preset"):
        Recipe(**RECIPE, backbone_weights="resnet_50_imagenet")
    with pytest.raises(ValueError, match=r"must be null .* or a local keras-hub ResNet preset"):
        Recipe(**RECIPE, backbone_weights=50)
    hrnet = {**RECIPE, "backbone": "hrnet18", "backbone_kwargs": {}}
    with pytest.raises(ValueError, match=r"loads into the project's ResNets .* not into backbone"):
        Recipe(**hrnet, backbone_weights=folder)
    hub = {**RECIPE, "backbone": f"preset:{folder}", "backbone_kwargs": {}}
    with pytest.raises(ValueError, match=r"keras-hub backbone, which already gets its pretrained"):
        Recipe(**hub, backbone_weights=folder)

    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"neither a keras-hub preset folder nor an \.npz"):
        Recipe(**RECIPE, backbone_weights=str(text))
    with pytest.raises(ValueError, match=r"is a folder but not a keras-hub preset"):
        Recipe(**RECIPE, backbone_weights=str(tmp_path))
    with pytest.raises(ValueError, match=r"a keras-hub ResNet-10, backbone 'resnet18' is a Res"):
        Recipe(**{**RECIPE, "backbone": "resnet18"}, backbone_weights=folder)
    narrow = {**RECIPE, "backbone_kwargs": {"width": 8}}
    with pytest.raises(ValueError, match=r"width 64 .* remove width from backbone_kwargs"):
        Recipe(**narrow, backbone_weights=folder)
