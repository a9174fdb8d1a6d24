"""PAD-Net on PASCAL-Context with the survey's HRNet-18 setting (Vandenhende et al., TPAMI 2022).

Five tasks at 512x512: semseg (21 classes), human parts (7), saliency, normals and edges with
the survey's fixed loss weights; Adam 1e-4, weight decay 1e-4, poly schedule (power 0.9),
batch 8, 100 epochs. The other decoder-focused PASCAL recipes replace the architecture of this one.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.pascal("padnet_pascal", architecture="padnet")
