"""Cross-stitch network on the synthetic scenes: :mod:`.mtan_synthetic` with this
architecture.

One ResNet per task, from scratch to stay cheap (``--set init_from_single_task=train`` first
trains the single-task runs, as the survey does); with Adam the units' ``lr_multiplier`` of 100
acts as about 10x (see :class:`mtl_keras.architectures._blocks.ScaledWeight`).
"""

import dataclasses

from mtl_keras.recipes.mtan_synthetic import recipe as mtan_synthetic


def recipe():
    return dataclasses.replace(
        mtan_synthetic(), name="cross_stitch_synthetic", architecture="cross_stitch"
    )
