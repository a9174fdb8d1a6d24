"""Branched multi-task network on NYUD-v2 with the survey's MTL-baseline setting (ResNet-50).

The survey does not benchmark branched networks; this recipe trains the default tree (shared
stem and stages 1-2, one branch per task in stages 3-4) like the survey's ResNet-50 multi-task
baseline (:mod:`.mtan_nyud`: Adam 1e-4, 100 epochs, batch 8). Choose the tree with
:func:`mtl_keras.architectures.branching.choose_tree` from trained single-task networks.
"""

import dataclasses

from mtl_keras.recipes.mtan_nyud import recipe as mtan_nyud


def recipe():
    return dataclasses.replace(mtan_nyud(), name="branched_nyud", architecture="branched")
