"""Branched multi-task network on PASCAL-Context with the survey's ResNet-18 MTL-baseline setting.

As ``configs/pascal/resnet18/multi_task_baseline.yml``: Adam 1e-4, weight decay 1e-4, poly
schedule, batch 6, 100 epochs; data, tasks, loss weights and backbone as :mod:`.mtan_pascal`.
The default tree shares the stem and stages 1-2; choose one with
:func:`mtl_keras.architectures.branching.choose_tree`. ASTMT replaces the architecture of this one.
"""

import dataclasses

from mtl_keras.recipes.mtan_pascal import recipe as mtan_pascal


def recipe():
    return dataclasses.replace(
        mtan_pascal(),
        name="branched_pascal",
        architecture="branched",
        optimizer="adam",
        learning_rate=1e-4,
    )
