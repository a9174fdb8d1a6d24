"""Sluice network on NYUD-v2, trained like the survey's cross-stitch network.

The survey does not benchmark sluice networks; as their generalisation of cross-stitch units they
use its cross-stitch recipe (:mod:`.cross_stitch_nyud`: SGD 1e-3, 100x on the alpha and
beta units, 50 epochs, columns from its own single-task runs ``sluice_nyud__single_<task>``).
"""

import dataclasses

from mtl_keras.recipes.cross_stitch_nyud import recipe as cross_stitch_nyud


def recipe():
    return dataclasses.replace(cross_stitch_nyud(), name="sluice_nyud", architecture="sluice")
