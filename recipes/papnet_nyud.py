"""PAP-Net on NYUD-v2: ``padnet_nyud``'s setting with PAP-Net.

The affinities run at 1/16 of 480x640, i.e. 30x40 = 1,200 pixels (5.8 MB per affinity matrix and
image); ``--set head_kwargs='{"affinity_stride": 8}'`` quadruples the pixels and multiplies that
memory by 16 (see ``mtl_keras.architectures.papnet``).
"""

import dataclasses

from recipes.padnet_nyud import recipe as padnet_nyud


def recipe():
    return dataclasses.replace(
        padnet_nyud(),
        name="papnet_nyud",
        architecture="papnet",
        head_kwargs={"affinity_stride": 16},
    )
