"""MTI-Net on the synthetic scenes: ``padnet_synthetic`` with MTI-Net (HRNet-18 widths)."""

import dataclasses

from mtl_keras.recipes.padnet_synthetic import recipe as padnet_synthetic


def recipe():
    return dataclasses.replace(
        padnet_synthetic(), name="mtinet_synthetic", architecture="mtinet", head_kwargs={}
    )
