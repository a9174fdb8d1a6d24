"""NDDR-CNN on NYUD-v2 with the survey's ResNet-50 setting (``configs/nyud/resnet50/nddr_cnn.yml``).

SGD 1e-3 with 100x on the NDDR layers, 50 epochs, NDDR layers after the stem and every stage
initialised 0.9 / 0.1, columns from the single-task networks (its own runs
``nddr_cnn_nyud__single_<task>``): as :mod:`.cross_stitch_nyud`.
"""

import dataclasses

from mtl_keras.recipes.cross_stitch_nyud import recipe as cross_stitch_nyud


def recipe():
    return dataclasses.replace(cross_stitch_nyud(), name="nddr_cnn_nyud", architecture="nddr_cnn")
