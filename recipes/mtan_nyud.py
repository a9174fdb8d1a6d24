"""MTAN on NYUD-v2 with the survey's ResNet-50 setting (Vandenhende et al., TPAMI 2022, Sec. 5).

Semseg (40 classes) and depth at 480x640, fixed loss weights 1 and 1, dilated ResNet-50 (output
stride 8) with a DeepLab-v3 head per task; Adam 1e-4, weight decay 1e-4, poly schedule (power 0.9),
batch 8, 100 epochs (the survey's ``configs/nyud/resnet50/mtan.yml``). The Adam-trained
encoder-focused NYUD recipes (branched, ASTMT) replace the architecture of this one.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.nyud("mtan_nyud", architecture="mtan")
