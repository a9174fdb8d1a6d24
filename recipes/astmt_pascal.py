"""ASTMT on PASCAL-Context (its own benchmark) with the survey's ResNet-18 MTL-baseline setting.

Trained as :mod:`.branched_pascal` (Adam 1e-4, 100 epochs, batch 6), with ASTMT's
adversarial task discriminator on loss gradients (Maninis et al., CVPR 2019, Sec. 3.3): weight
0.01 (the ``dscr_w`` of ASTMT's code), a depth-2 1x1 discriminator, the reversal strength ramped
over the run (:mod:`mtl_keras.training.adversarial`).
"""

import dataclasses

from mtl_keras.recipes.branched_pascal import recipe as branched_pascal


def recipe():
    return dataclasses.replace(
        branched_pascal(), name="astmt_pascal", architecture="astmt", adversarial_weight=0.01
    )
