"""NDDR-CNN on the synthetic scenes: :mod:`.mtan_synthetic` with this architecture.

From scratch, as :mod:`.cross_stitch_synthetic` (which says how to start from single-task
networks instead and how the units' learning-rate multiplier acts under Adam).
"""

import dataclasses

from mtl_keras.recipes.mtan_synthetic import recipe as mtan_synthetic


def recipe():
    return dataclasses.replace(mtan_synthetic(), name="nddr_cnn_synthetic", architecture="nddr_cnn")
