"""Layers shared by the ResNet and HRNet backbones: a named conv/BN factory and residual blocks.

Both backbones use bias-free convolutions with PyTorch's explicit symmetric padding and He
"fan_out" initialisation (as torchvision), and the residual blocks of He et al., "Deep Residual
Learning for Image Recognition", CVPR 2016. Layer names are part of the weight format (weight
files, torchvision / HRNet checkpoint conversion), so every layer is named by the caller.
"""

from __future__ import annotations

import keras

BN_EPSILON = 1e-5
#: output channels per ``planes`` of each residual block kind
EXPANSION = {"basic": 1, "bottleneck": 4}


class ConvBN:
    """Factory of the named bias-free convolutions and batch normalisations of one network.

    Args:
        sync_batchnorm: batch statistics over all replicas (``BatchNormalization(synchronized)``).
        bn_momentum: Keras momentum of every BatchNormalization (``1 -`` PyTorch's momentum).
    """

    def __init__(self, sync_batchnorm: bool, bn_momentum: float):
        self.sync_batchnorm = sync_batchnorm
        self.bn_momentum = bn_momentum

    def conv(self, x, filters: int, size: int, name: str, stride: int = 1, dilation: int = 1):
        """Bias-free convolution ``name`` with PyTorch's symmetric padding.

        The padding, ``dilation * (size - 1) // 2`` pixels, is a ``ZeroPadding2D`` named
        ``f"{name}_pad"`` (none for 1x1 convolutions).
        """
        pad = dilation * (size - 1) // 2
        if pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        return keras.layers.Conv2D(
            filters,
            size,
            strides=stride,
            dilation_rate=dilation,
            use_bias=False,
            # He et al. (ICCV 2015) "fan_out" initialisation, as torchvision
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, "fan_out", "untruncated_normal"
            ),
            name=name,
        )(x)

    def bn(self, x, name: str):
        """BatchNormalization ``name`` (epsilon 1e-5, the network's momentum)."""
        return keras.layers.BatchNormalization(
            epsilon=BN_EPSILON,
            momentum=self.bn_momentum,
            synchronized=self.sync_batchnorm,
            name=name,
        )(x)

    def conv_bn(
        self,
        x,
        filters: int,
        size: int,
        name: str,
        stride: int = 1,
        dilation: int = 1,
        *,
        conv: str = "conv",
        bn: str = "bn",
        relu: bool = False,
    ):
        """:meth:`conv` ``f"{name}_{conv}"``, :meth:`bn` ``f"{name}_{bn}"`` and, with ``relu``,
        a ReLU ``f"{name}_relu"``."""
        x = self.bn(self.conv(x, filters, size, f"{name}_{conv}", stride, dilation), f"{name}_{bn}")
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_block(
    layers: ConvBN,
    x,
    kind: str,
    planes: int,
    name: str,
    *,
    stride: int = 1,
    dilation: int = 1,
    first_dilation: int | None = None,
    out_name: str | None = None,
):
    """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual block.

    The stride and dilation are on the first 3x3 convolution (torchvision's "v1.5"); the
    shortcut is a strided 1x1 conv + BN when the stride or the channels change, else the
    identity. Layers: ``f"{name}_shortcut_{conv,bn}"``, ``f"{name}_{conv,bn}{k}"``,
    ``f"{name}_relu{k}"``, ``f"{name}_add"`` and the final ReLU ``out_name`` (default
    ``f"{name}_out"``).

    Args:
        layers: the network's conv/BN factory.
        x: the block input.
        kind: ``"basic"`` or ``"bottleneck"``.
        planes: width of the inner convolutions; the block outputs
            ``planes * EXPANSION[kind]`` channels.
        name: prefix of the block's layer names.
        stride: stride of the block (on its first 3x3 convolution and the shortcut).
        dilation: dilation of the 3x3 convolutions.
        first_dilation: dilation of the first 3x3 convolution (the one carrying the stride),
            default ``dilation``.
        out_name: name of the final ReLU.
    """
    out_channels = planes * EXPANSION[kind]
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = layers.conv_bn(
            x, out_channels, 1, name, stride, conv="shortcut_conv", bn="shortcut_bn"
        )
    first = dilation if first_dilation is None else first_dilation
    if kind == "basic":
        x = layers.conv_bn(x, planes, 3, name, stride, first, conv="conv1", bn="bn1")
        x = keras.layers.ReLU(name=f"{name}_relu1")(x)
        x = layers.conv_bn(x, planes, 3, name, 1, dilation, conv="conv2", bn="bn2")
    else:
        x = layers.conv_bn(x, planes, 1, name, conv="conv1", bn="bn1")
        x = keras.layers.ReLU(name=f"{name}_relu1")(x)
        x = layers.conv_bn(x, planes, 3, name, stride, first, conv="conv2", bn="bn2")
        x = keras.layers.ReLU(name=f"{name}_relu2")(x)
        x = layers.conv_bn(x, out_channels, 1, name, conv="conv3", bn="bn3")
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=out_name or f"{name}_out")(x)
