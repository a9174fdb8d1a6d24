"""PAP-Net on the synthetic scenes: ``padnet_synthetic`` with PAP-Net.

The affinities run at 1/4 of 64x64 (16x16 = 256 pixels, the decoder's own resolution).
"""

import dataclasses

from mtl_keras.recipes.padnet_synthetic import recipe as padnet_synthetic


def recipe():
    return dataclasses.replace(
        padnet_synthetic(),
        name="papnet_synthetic",
        architecture="papnet",
        head_kwargs={"channels": 64, "affinity_channels": 32, "affinity_stride": 4},
    )
