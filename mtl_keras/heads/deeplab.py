"""DeepLab-v3 head: Atrous Spatial Pyramid Pooling (ASPP) and a classifier.

Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv 2017
(Sec. 3.3): parallel 1x1 and 3x3 atrous convolutions (rates 12, 24, 36 at output stride 8; use
6, 12, 18 at output stride 16) and image-level pooling, concatenated and projected by a 1x1
convolution. As in the survey's DeepLab head, a 3x3 conv + BN + ReLU follows before the 1x1
classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from mtl_keras.heads.simple import ResizeLike, classifier, conv_bn_relu


def deeplab_head(
    features,
    out_channels: int,
    *,
    name: str,
    rates: Sequence[int] = (12, 24, 36),
    filters: int = 256,
    dropout: float = 0.5,
    sync_batchnorm: bool = True,
) -> keras.KerasTensor:
    """ASPP (1x1, 3x3 atrous at ``rates``, image pooling) -> projection -> 3x3 -> 1x1 classifier.

    Layers are named ``f"{name}_aspp_1x1_*"``, ``f"{name}_aspp_atrous{i}_*"``,
    ``f"{name}_aspp_pool_*"``, ``f"{name}_aspp_project_*"``, ``f"{name}_aspp_dropout"``,
    ``f"{name}_3x3_*"`` and ``f"{name}_classifier"``.

    Args:
        features: (B, h, w, C) feature map; h and w may be dynamic (None).
        out_channels: channels of the prediction.
        name: prefix of every layer name.
        rates: dilation rates of the atrous branches.
        filters: channels of every branch, of the projection and of the 3x3 block.
        dropout: dropout rate after the projection.
        sync_batchnorm: synchronise batch statistics across replicas.

    Returns:
        (B, h, w, out_channels) logits at the resolution of ``features``.

    Example:
        >>> x = keras.Input((None, None, 32))
        >>> tuple(deeplab_head(x, 5, name="semseg", filters=8).shape)
        (None, None, None, 5)
    """
    opts = {"sync_batchnorm": sync_batchnorm}
    branches = [conv_bn_relu(features, filters, 1, f"{name}_aspp_1x1", **opts)]
    for i, rate in enumerate(rates, start=1):
        branches.append(
            conv_bn_relu(features, filters, 3, f"{name}_aspp_atrous{i}", dilation=rate, **opts)
        )
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_aspp_pool_avg")(
        features
    )
    pooled = conv_bn_relu(pooled, filters, 1, f"{name}_aspp_pool", **opts)
    branches.append(
        ResizeLike(interpolation="bilinear", name=f"{name}_aspp_pool_resize")([pooled, features])
    )

    x = keras.layers.Concatenate(name=f"{name}_aspp_concat")(branches)
    x = conv_bn_relu(x, filters, 1, f"{name}_aspp_project", **opts)
    x = keras.layers.Dropout(dropout, name=f"{name}_aspp_dropout")(x)
    x = conv_bn_relu(x, filters, 3, f"{name}_3x3", **opts)
    return classifier(x, out_channels, name)
