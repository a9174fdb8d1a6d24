"""ASTMT on NYUD-v2 with the survey's MTL-baseline setting (ResNet-50, DeepLab decoder).

Trained like the survey's ResNet-50 multi-task baseline (:mod:`.mtan_nyud`: Adam 1e-4,
100 epochs, batch 8), with ASTMT's adversarial task discriminator on loss gradients
(Maninis et al., CVPR 2019, Sec. 3.3): weight 0.01 (the ``dscr_w`` of ASTMT's code), a depth-2 1x1
discriminator, the reversal strength ramped over the run (:mod:`mtl_keras.training.adversarial`).
"""

import dataclasses

from mtl_keras.recipes.mtan_nyud import recipe as mtan_nyud


def recipe():
    return dataclasses.replace(
        mtan_nyud(), name="astmt_nyud", architecture="astmt", adversarial_weight=0.01
    )
