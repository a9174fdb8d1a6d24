"""Cross-stitch network on NYUD-v2 with the survey's ResNet-50 setting.

As ``configs/nyud/resnet50/cross_stitch.yml``: SGD (momentum 0.9) 1e-3 with 100x on the
cross-stitch units (the architecture's ``lr_multiplier``), weight decay 1e-4, poly schedule,
batch 8, 50 epochs, units initialised 0.9 / 0.1, the rest as :mod:`.mtan_nyud`. As in the
survey the task columns and heads start from trained single-task networks
(``init_from_single_task="train"``: the single-task runs ``cross_stitch_nyud__single_semseg`` and
``..._depth``, with this recipe's data, backbone, head and optimiser, are trained first unless
they have finished; see ``docs/architectures.md``). NDDR-CNN and sluice networks replace the
architecture of this one.
"""

import dataclasses

from mtl_keras.recipes.mtan_nyud import recipe as mtan_nyud


def recipe():
    return dataclasses.replace(
        mtan_nyud(),
        name="cross_stitch_nyud",
        architecture="cross_stitch",
        optimizer="sgd",
        learning_rate=1e-3,
        epochs=50,
        init_from_single_task="train",
    )
