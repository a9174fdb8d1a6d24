"""MTAN on PASCAL-Context with the survey's ResNet-18 setting (its ``resnet18/mtan.yml``).

Five tasks at 512x512 (semseg 21 classes, human parts 7, saliency, normals, edges) with the
survey's fixed loss weights, dilated ResNet-18 (output stride 8) and DeepLab-v3 heads; SGD
(momentum 0.9) 5e-3, weight decay 1e-4, poly schedule (power 0.9), batch 6, 100 epochs.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.pascal(
        "mtan_pascal",
        backbone="resnet18",
        architecture="mtan",
        optimizer="sgd",
        learning_rate=5e-3,
        batch_size=6,
    )
