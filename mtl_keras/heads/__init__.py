"""Dense-prediction heads: ``head(features, out_channels, *, name, ...) -> KerasTensor``.

Every head prefixes its layer names with ``name`` and returns logits at the resolution of its
(first) input; the architecture resizes them to the image.
"""

from __future__ import annotations

from collections.abc import Callable

from mtl_keras._names import canonical
from mtl_keras.heads.deeplab import deeplab_head
from mtl_keras.heads.simple import ResizeLike, conv_head, hrnet_head

HEADS: dict[str, Callable] = {"deeplab": deeplab_head, "conv": conv_head, "hrnet": hrnet_head}
ALIASES = {"aspp": "deeplab", "deeplabv3": "deeplab"}


def available() -> list[str]:
    """Names of the registered heads."""
    return list(HEADS)


def get(name: str) -> Callable:
    """The head builder registered as ``name``.

    Example:
        >>> get("conv").__name__
        'conv_head'
    """
    also = " (deeplab = ASPP, hrnet = multi-scale fusion of a list of levels, conv = light)"
    return HEADS[canonical("head", name, available(), ALIASES, also=also)]


__all__ = [
    "ALIASES",
    "HEADS",
    "ResizeLike",
    "available",
    "conv_head",
    "deeplab_head",
    "get",
    "hrnet_head",
]
