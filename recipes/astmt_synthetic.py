"""ASTMT on the synthetic scenes: :mod:`.mtan_synthetic` with this architecture and ASTMT's
adversarial task discriminator on loss gradients (weight 0.01, as :mod:`.astmt_nyud`; it
costs about 1.3x the CPU time of a plain step here). ``--set adversarial_weight=0`` trains ASTMT
without it.
"""

import dataclasses

from mtl_keras.recipes.mtan_synthetic import recipe as mtan_synthetic


def recipe():
    return dataclasses.replace(
        mtan_synthetic(), name="astmt_synthetic", architecture="astmt", adversarial_weight=0.01
    )
