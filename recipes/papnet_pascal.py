"""PAP-Net on PASCAL-Context: ``padnet_pascal``'s setting with PAP-Net.

The affinities run at 1/16 of 512x512, i.e. 32x32 = 1,024 pixels (4.2 MB per affinity matrix and
image, 10 matrices for the five tasks).
"""

import dataclasses

from mtl_keras.recipes.padnet_pascal import recipe as padnet_pascal


def recipe():
    return dataclasses.replace(
        padnet_pascal(),
        name="papnet_pascal",
        architecture="papnet",
        head_kwargs={"affinity_stride": 16},
    )
