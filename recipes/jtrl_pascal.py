"""JTRL on PASCAL-Context: ``padnet_pascal``'s setting with JTRL on all five tasks.

JTRL was published for two tasks; with five, each task's state attends to the latest state of
the task before it (round-robin, see ``mtl_keras.architectures.jtrl``).
"""

import dataclasses

from mtl_keras.recipes.padnet_pascal import recipe as padnet_pascal


def recipe():
    return dataclasses.replace(padnet_pascal(), name="jtrl_pascal", architecture="jtrl")
