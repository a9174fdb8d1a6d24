"""NDDR-CNN on PASCAL-Context with the survey's ResNet-18 setting
(``configs/pascal/resnet18/nddr_cnn.yml``): as :mod:`.cross_stitch_pascal` (SGD 5e-3,
100x on the NDDR layers, batch 12, 20 epochs, columns from its own single-task runs
``nddr_cnn_pascal__single_<task>``; the survey initialises the layers 0.8 / 0.05).
"""

import dataclasses

from mtl_keras.recipes.cross_stitch_pascal import recipe as cross_stitch_pascal


def recipe():
    return dataclasses.replace(
        cross_stitch_pascal(), name="nddr_cnn_pascal", architecture="nddr_cnn"
    )
