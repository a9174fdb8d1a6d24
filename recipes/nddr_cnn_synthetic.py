"""NDDR-CNN on the synthetic scenes: :mod:`recipes.mtan_synthetic` with this
architecture.

From scratch, with one ResNet per task; with Adam the units' ``lr_multiplier`` of 100
acts as about 10x (see :class:`mtl_keras.architectures._blocks.ScaledWeight`).
"""

import dataclasses

from recipes.mtan_synthetic import recipe as mtan_synthetic


def recipe():
    return dataclasses.replace(mtan_synthetic(), name="nddr_cnn_synthetic", architecture="nddr_cnn")
