"""Pieces shared by the transformer-era decoders (DPT, InvPT, MLoRE).

* :func:`transformer_options`: the decoder's options come in through ``head_kwargs`` as for the
  survey's decoder-focused architectures; ``head`` may be the architecture's own name or
  ``"hrnet"`` (the recipes' default);
* :func:`encode_levels`: normalise, run the backbone, mark the chosen pyramid levels as the shared
  representation, and check their sizes are static (attention and routing need them);
* :func:`scaled`: a default width derived from the encoder (``None`` options), so a tiny encoder
  gets a tiny decoder and the papers' encoders get the papers' widths.

Layer names follow ``f"{task}_{block}"`` as everywhere in ``mtl_keras.architectures``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras

from mtl_keras.architectures import _decoder_blocks as blocks

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def transformer_options(
    arch: str, head: str, head_kwargs: Mapping | None, defaults: Mapping
) -> dict:
    """:func:`~mtl_keras.architectures._decoder_blocks.decoder_options`, ``head`` being ``arch``
    or ``"hrnet"``."""
    return blocks.decoder_options(arch, head, head_kwargs, defaults, accepted=(arch, "hrnet"))


def encode_levels(
    arch: str, image, backbone, backbone_kwargs: Mapping | None, levels: Sequence[str]
) -> list:
    """The chosen pyramid levels, marked as the shared representation, with static sizes."""
    feats = blocks.encode(image, backbone, backbone_kwargs, list(levels))
    for name, x in zip(levels, feats):
        if None in tuple(x.shape[1:]):
            raise ValueError(
                f"{arch} needs static feature sizes (its attention and routing are built for "
                f"them); level {name} has shape {tuple(x.shape)}. Build it with image_size=(H, W)"
            )
    return [blocks.mark(x, n) for x, n in zip(feats, levels)]


def scaled(value, reference: int, ratio: float, minimum: int = 1) -> int:
    """``value`` if given, else ``max(minimum, round(reference * ratio))``."""
    return int(value) if value is not None else max(minimum, int(round(reference * ratio)))


def conv_bn_act(x, filters: int, size: int, name: str, *, act="relu", sync_batchnorm=True):
    """Bias-free "same" convolution, BatchNormalization, activation (``None``: none)."""
    x = keras.layers.Conv2D(filters, size, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, synchronized=sync_batchnorm, name=f"{name}_bn"
    )(x)
    return keras.layers.Activation(act, name=f"{name}_{act}")(x) if act else x
