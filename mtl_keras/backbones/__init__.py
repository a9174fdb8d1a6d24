"""Backbones: functional builders returning ``{"P2": ..., "P5": ...}`` feature pyramids.

``get(name, **kwargs)`` builds a registered backbone; ``BACKBONES`` maps names to builders taking
keyword arguments only (``output_stride``, ``width``, ``input_shape``, ``sync_batchnorm``, ``name``
for ResNets; ``width``, ``stem_width``, ``config``, ``input_shape``, ``sync_batchnorm``, ``name``
for ``hrnet18``, HRNet-W18 small v2). Names ``"keras_hub.<Class>"`` (with the class's
arguments) and ``"preset:<handle or directory>"`` build a keras-hub backbone as a
:class:`~mtl_keras.backbones.keras_hub.KerasHubEncoder` (see :mod:`mtl_keras.backbones.keras_hub`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras

from mtl_keras._names import canonical
from mtl_keras.backbones.hrnet import (
    build_hrnet,
    convert_hrnet_checkpoint,
    hrnet_pyramid_channels,
    hrnet_torch_to_keras,
)
from mtl_keras.backbones.keras_hub import KerasHubEncoder, is_keras_hub, keras_hub_backbone
from mtl_keras.backbones.resnet import build_resnet, pyramid_channels, pyramid_strides
from mtl_keras.backbones.weights import (
    convert_torchvision_resnet,
    load_backbone_weights,
    save_backbone_weights,
    torchvision_resnet_to_keras,
)

BACKBONES: dict[str, Callable[..., keras.Model]] = {
    f"resnet{depth}": functools.partial(build_resnet, depth) for depth in (10, 18, 34, 50, 101)
}
BACKBONES["hrnet18"] = build_hrnet
# the papers' names; "ResNet-18" and "resnet_18" need none (case, "-" and "_" are ignored)
ALIASES = {"hrnet_w18": "hrnet18", "hrnet_w18_small": "hrnet18", "hrnet_w18_small_v2": "hrnet18"}


def available() -> list[str]:
    """Names of the registered backbones."""
    return list(BACKBONES)


def get(name: str, **kwargs) -> keras.Model | KerasHubEncoder:
    """Build backbone ``name`` with the builder's keyword arguments.

    ``"keras_hub.<Class>"`` and ``"preset:<handle or directory>"`` give a keras-hub encoder
    (:func:`~mtl_keras.backbones.keras_hub.keras_hub_backbone`).

    Example:
        >>> model = get("resnet18", width=8, output_stride=16)
        >>> sorted(model.output)
        ['P2', 'P3', 'P4', 'P5']
    """
    if is_keras_hub(name):
        return keras_hub_backbone(name, **kwargs)
    also = ", 'keras_hub.<Class>' or 'preset:<handle or directory>'"
    return BACKBONES[canonical("backbone", name, available(), ALIASES, also=also)](**kwargs)


__all__ = [
    "ALIASES",
    "BACKBONES",
    "KerasHubEncoder",
    "available",
    "build_hrnet",
    "build_resnet",
    "convert_hrnet_checkpoint",
    "convert_torchvision_resnet",
    "get",
    "hrnet_pyramid_channels",
    "hrnet_torch_to_keras",
    "is_keras_hub",
    "keras_hub_backbone",
    "load_backbone_weights",
    "pyramid_channels",
    "pyramid_strides",
    "save_backbone_weights",
    "torchvision_resnet_to_keras",
]
