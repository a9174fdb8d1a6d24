"""Tiny encoder-focused networks shared by the architecture tests (built once per session)."""

import functools

import keras
import numpy as np

from mtl_keras import architectures
from tests.utils import tiny_specs

#: the encoder-focused architectures of issue 3
ARCHITECTURES = ("cross_stitch", "sluice", "nddr_cnn", "mtan", "branched", "astmt")
TASKS = ("semseg", "depth")
SIZE = 32
TINY = {
    "backbone": "resnet10",
    "backbone_kwargs": {"width": 8, "output_stride": 8},
    "head": "conv",
    "head_kwargs": {"filters": 8, "num_convs": 1},
    "image_size": (SIZE, SIZE),
}


@functools.cache
def tiny_architecture(name: str) -> keras.Model:
    """Architecture ``name`` on resnet10 (width 8) with conv heads, semseg + depth, 32 px."""
    keras.utils.set_random_seed(0)
    return architectures.build(name, list(tiny_specs(TASKS).values()), **TINY)


def raw_images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3)).astype("float32")
