"""Branched multi-task network (default tree) on the synthetic scenes:
:mod:`.mtan_synthetic` with this architecture.
"""

import dataclasses

from mtl_keras.recipes.mtan_synthetic import recipe as mtan_synthetic


def recipe():
    return dataclasses.replace(mtan_synthetic(), name="branched_synthetic", architecture="branched")
