"""ASTMT (without the adversarial loss) on the synthetic scenes:
:mod:`recipes.mtan_synthetic` with this architecture.
"""

import dataclasses

from recipes.mtan_synthetic import recipe as mtan_synthetic


def recipe():
    return dataclasses.replace(mtan_synthetic(), name="astmt_synthetic", architecture="astmt")
