"""Cross-stitch network on PASCAL-Context with the survey's ResNet-18 setting.

As ``configs/pascal/resnet18/cross_stitch.yml``: SGD (momentum 0.9) 5e-3 with 100x on the units,
weight decay 1e-4, poly schedule, batch 12, 20 epochs; data, tasks, loss weights and backbone as
:mod:`.mtan_pascal`. The survey's PASCAL config initialises the units to 0.8 / 0.05
(``alpha``/``beta`` of :func:`~mtl_keras.architectures.build_cross_stitch`; the recipe keeps the
builder's 0.9 / 0.1, ``--set architecture_kwargs='{"alpha": 0.8, "beta": 0.05}'`` chooses the
survey's) and starts the columns from the single-task networks (``init_from_single_task="train"``:
the runs ``cross_stitch_pascal__single_<task>`` are trained first unless they have finished).
NDDR-CNN and sluice networks replace the architecture of this one.
"""

import dataclasses

from mtl_keras.recipes.mtan_pascal import recipe as mtan_pascal


def recipe():
    return dataclasses.replace(
        mtan_pascal(),
        name="cross_stitch_pascal",
        architecture="cross_stitch",
        optimizer="sgd",
        learning_rate=5e-3,
        batch_size=12,
        epochs=20,
        init_from_single_task="train",
    )
