"""JTRL on the synthetic scenes: ``padnet_synthetic`` with JTRL (64-channel task states)."""

import dataclasses

from mtl_keras.recipes.padnet_synthetic import recipe as padnet_synthetic


def recipe():
    return dataclasses.replace(
        padnet_synthetic(), name="jtrl_synthetic", architecture="jtrl", head_kwargs={"channels": 64}
    )
