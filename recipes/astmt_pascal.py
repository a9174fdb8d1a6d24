"""ASTMT on PASCAL-Context (its own benchmark) with the survey's ResNet-18 MTL-baseline setting.

Trained as :mod:`recipes.branched_pascal` (Adam 1e-4, 100 epochs, batch 6); without the
adversarial loss on gradients until the trainer supports it (``docs/architectures.md``).
"""

import dataclasses

from recipes.branched_pascal import recipe as branched_pascal


def recipe():
    return dataclasses.replace(branched_pascal(), name="astmt_pascal", architecture="astmt")
