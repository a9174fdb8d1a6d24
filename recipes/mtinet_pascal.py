"""MTI-Net on PASCAL-Context: the survey's HRNet-18 setting of ``padnet_pascal`` with MTI-Net."""

import dataclasses

from mtl_keras.recipes.padnet_pascal import recipe as padnet_pascal


def recipe():
    return dataclasses.replace(padnet_pascal(), name="mtinet_pascal", architecture="mtinet")
