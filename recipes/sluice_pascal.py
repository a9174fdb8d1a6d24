"""Sluice network on PASCAL-Context, trained like the survey's cross-stitch network
(:mod:`.cross_stitch_pascal`: SGD 5e-3, 100x on the alpha and beta units, 20 epochs,
columns from its own single-task runs ``sluice_pascal__single_<task>``).
"""

import dataclasses

from mtl_keras.recipes.cross_stitch_pascal import recipe as cross_stitch_pascal


def recipe():
    return dataclasses.replace(cross_stitch_pascal(), name="sluice_pascal", architecture="sluice")
