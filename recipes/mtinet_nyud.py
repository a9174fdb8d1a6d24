"""MTI-Net on NYUD-v2: the survey's HRNet-18 setting of ``padnet_nyud`` with MTI-Net."""

import dataclasses

from mtl_keras.recipes.padnet_nyud import recipe as padnet_nyud


def recipe():
    return dataclasses.replace(padnet_nyud(), name="mtinet_nyud", architecture="mtinet")
