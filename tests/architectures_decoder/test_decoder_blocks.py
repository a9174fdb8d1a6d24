"""Decoder blocks against hand-computed values: affinities, diffusion, task softmax, options."""

import math

import keras
import numpy as np
import pytest

from mtl_keras import architectures
from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures.mtinet import TaskSoftmax
from mtl_keras.architectures.papnet import (
    AffinityDiffusion,
    AffinityMix,
    PixelAffinity,
    affinity_resolution,
)
from tests.utils import tiny_specs

TINY = {"backbone": "resnet10", "backbone_kwargs": {"width": 8, "output_stride": 16}}


def _column(*values):
    """A (1, 1, len(values), 1) feature map."""
    return np.asarray(values, "float32").reshape(1, 1, -1, 1)


def test_pixel_affinity_is_row_softmax_of_dot_products():
    m = np.asarray(PixelAffinity()(_column(1.0, 2.0)))[0]
    e = math.e
    expected = [[1 / (1 + e), e / (1 + e)], [1 / (1 + e**2), e**2 / (1 + e**2)]]
    np.testing.assert_allclose(m, expected, rtol=1e-6)


def test_diffusion_iterates_beta_m_x_plus_restart():
    swap = np.asarray([[[0.0, 1.0], [1.0, 0.0]]], "float32")
    x0 = _column(1.0, 3.0)
    # X1 = 0.5 [3, 1] + 0.5 [1, 3] = [2, 2];  X2 = 0.5 [2, 2] + 0.5 [1, 3] = [1.5, 2.5]
    out = AffinityDiffusion(beta=0.5, iterations=2)([x0, swap])
    np.testing.assert_allclose(np.asarray(out).ravel(), [1.5, 2.5])
    unchanged = AffinityDiffusion(beta=0.5, iterations=0)([x0, swap])
    np.testing.assert_allclose(np.asarray(unchanged), x0)
    with pytest.raises(ValueError, match="0 <= beta <= 1"):
        AffinityDiffusion(beta=1.5)


def test_affinity_mix_starts_equal_and_follows_its_softmax_weights():
    a = np.eye(2, dtype="float32")[None]
    b = np.ones((1, 2, 2), "float32")
    mix = AffinityMix(2)
    np.testing.assert_allclose(np.asarray(mix([a, b])), (a + b) / 2)
    mix.logits.assign([math.log(3.0), 0.0])  # softmax -> [0.75, 0.25]
    np.testing.assert_allclose(np.asarray(mix([a, b])), 0.75 * a + 0.25 * b, rtol=1e-6)


def test_task_softmax_normalises_across_task_blocks():
    # channels [task0: c0, c1 | task1: c0, c1]; per channel softmax over the two tasks
    x = np.asarray([0.0, math.log(3.0), math.log(3.0), 0.0], "float32").reshape(1, 1, 1, 4)
    np.testing.assert_allclose(
        np.asarray(TaskSoftmax(2)(x)).ravel(), [0.25, 0.75, 0.75, 0.25], rtol=1e-6
    )


def test_affinity_resolution_is_configurable_and_bounded():
    opts = {"affinity_size": None, "affinity_stride": 16}
    assert affinity_resolution(opts, (480, 640)) == (30, 40)  # N = 1,200 pixels on NYUD
    assert affinity_resolution(opts, (512, 512)) == (32, 32)
    assert affinity_resolution(opts, (33, 17)) == (3, 2)  # ceil
    assert affinity_resolution({**opts, "affinity_size": (5, 7)}, (480, 640)) == (5, 7)
    with pytest.raises(ValueError, match="affinity_size"):
        affinity_resolution(opts, None)
    net = architectures.build(
        "papnet",
        list(tiny_specs(("semseg", "depth")).values()),
        head_kwargs={"channels": 8, "affinity_channels": 4, "affinity_size": (2, 3)},
        **TINY,
    )  # any input size: the affinity resolution is fixed
    assert tuple(net.get_layer("depth_affinity").output.shape) == (None, 6, 6)
    out = net(np.zeros((1, 40, 24, 3), "uint8"))
    assert tuple(out["depth"].shape) == (1, 40, 24, 1)


def test_mtinet_neck_on_resnet_and_hrnet():
    specs = list(tiny_specs(("depth",)).values())
    fpn = architectures.build(
        "mtinet", specs, image_size=(32, 32), head_kwargs={"fpn_channels": 4}, **TINY
    )
    plain = architectures.build(
        "mtinet", specs, image_size=(32, 32), head_kwargs={"neck": "none"}, **TINY
    )
    assert fpn.get_layer("depth_s3_block2_out").output.shape[-1] == 4
    assert plain.get_layer("depth_s3_block2_out").output.shape[-1] == 64  # resnet10 width 8, P5
    assert not any(layer.name.startswith("fpn_") for layer in plain.layers)
    assert blocks.is_hrnet("hrnet18") and not blocks.is_hrnet("resnet50")


def test_distillation_sends_one_message_per_ordered_task_pair():
    feats = {t: keras.Input((4, 4, 3), name=t) for t in ("a", "b", "c")}
    out = blocks.multimodal_distillation(feats)
    model = keras.Model(list(feats.values()), out)
    # T (T - 1) = 6 messages, each two bias-free 3x3 convs of 3 -> 3 channels
    assert model.count_params() == 6 * 2 * 9 * 3 * 3
    assert blocks.multimodal_distillation({"a": feats["a"]})["a"] is feats["a"]


@pytest.mark.parametrize("arch", ["padnet", "mtinet", "papnet", "jtrl"])
def test_decoder_options_are_checked(arch):
    specs = list(tiny_specs(("depth",)).values())
    with pytest.raises(ValueError, match="head must be 'hrnet'"):
        architectures.build(arch, specs, head="deeplab", **TINY)
    with pytest.raises(ValueError, match=r"unknown decoder option\(s\) \['bogus'\]"):
        architectures.build(arch, specs, head_kwargs={"bogus": 1}, **TINY)
