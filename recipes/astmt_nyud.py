"""ASTMT on NYUD-v2 with the survey's MTL-baseline setting (ResNet-50, DeepLab decoder).

Trained like the survey's ResNet-50 multi-task baseline (:mod:`recipes.mtan_nyud`: Adam 1e-4,
100 epochs, batch 8); without the adversarial loss on gradients until the trainer supports it
(``docs/architectures.md``).
"""

import dataclasses

from recipes.mtan_nyud import recipe as mtan_nyud


def recipe():
    return dataclasses.replace(mtan_nyud(), name="astmt_nyud", architecture="astmt")
