"""Soft-sharing networks start from trained single-task networks (the survey's recipe step)."""

import keras
import numpy as np
import pytest

from mtl_keras.architectures import (
    build_cross_stitch,
    build_nddr,
    build_single_task,
    init_from_single_task,
    load_single_task_networks,
)
from mtl_keras.training import MultiTaskModel
from tests.architectures.tiny import TASKS, TINY, raw_images
from tests.utils import tiny_specs


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A trainer checkpoint for semseg and a network weights file for depth."""
    folder = tmp_path_factory.mktemp("single_task")
    specs = tiny_specs(TASKS)
    keras.utils.set_random_seed(1)
    networks = {t: build_single_task(s, **TINY) for t, s in specs.items()}
    trainer = MultiTaskModel(networks["semseg"], [specs["semseg"]])
    trainer.compile(optimizer="sgd")
    paths = {"semseg": str(folder / "semseg.weights.h5"), "depth": str(folder / "depth.weights.h5")}
    trainer.save_weights(paths["semseg"])
    networks["depth"].save_weights(paths["depth"])
    return networks, paths


def test_identity_stitched_network_reproduces_the_single_task_networks(checkpoints):
    networks, paths = checkpoints
    specs = tiny_specs(TASKS)
    loaded = load_single_task_networks(specs, paths, **TINY)
    for task in TASKS:  # both checkpoint layouts load every weight
        for a, b in zip(loaded[task].weights, networks[task].weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    network = build_cross_stitch(list(specs.values()), alpha=1.0, beta=0.0, **TINY)
    counts = init_from_single_task(network, loaded)
    assert counts == {"semseg": 27, "depth": 27}  # 24 backbone + 3 head layers with weights
    x = raw_images()
    out = network(x, training=False)
    for task in TASKS:
        np.testing.assert_allclose(
            np.asarray(out[task]), np.asarray(networks[task](x, training=False)[task]), atol=1e-5
        )


def test_nddr_columns_get_the_single_task_weights(checkpoints):
    networks, _ = checkpoints
    network = build_nddr(list(tiny_specs(TASKS).values()), **TINY)
    init_from_single_task(network, networks)
    np.testing.assert_array_equal(
        network.get_layer("depth_stage3").get_layer("stage3_block1_conv2").kernel.numpy(),
        networks["depth"].get_layer("resnet10").get_layer("stage3_block1_conv2").kernel.numpy(),
    )
    np.testing.assert_array_equal(
        network.get_layer("semseg_classifier").kernel.numpy(),
        networks["semseg"].get_layer("semseg_classifier").kernel.numpy(),
    )


def test_mismatched_networks_are_rejected_before_anything_is_assigned(checkpoints):
    networks, paths = checkpoints
    specs = tiny_specs(TASKS)
    network = build_cross_stitch(list(specs.values()), **TINY)
    before = [np.array(w) for w in network.weights]
    wider = {**TINY, "backbone_kwargs": {"width": 16, "output_stride": 8}}
    other = {"semseg": networks["semseg"], "depth": build_single_task(specs["depth"], **wider)}
    with pytest.raises(ValueError, match=r"layer 'stem_conv' of task 'depth'.*\(7, 7, 3, 8\)"):
        init_from_single_task(network, other)
    for a, b in zip(before, network.weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    with pytest.raises(ValueError, match=r"no single-task checkpoint for task\(s\) \['depth'\]"):
        load_single_task_networks(specs, {"semseg": paths["semseg"]}, **TINY)
    with pytest.raises(
        ValueError, match=r"stem_conv/kernel, is \(7, 7, 3, 8\) in the file and \(7, 7, 3, 16\)"
    ):
        load_single_task_networks(specs, paths, **wider)
