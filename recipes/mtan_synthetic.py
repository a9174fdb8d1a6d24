"""MTAN on the synthetic scenes, all six tasks, on CPU in minutes.

ResNet-18 (width 16, output stride 16) with HRNet-style heads on 64x64 images, as the demo, and
the survey's optimiser (Adam, weight decay 1e-4, poly schedule, batch 8) with the demo's learning
rate (the models train from scratch here). The other encoder-focused synthetic recipes replace the
architecture of this one.
"""

from mtl_keras.recipes import _survey


def recipe():
    return _survey.synthetic("mtan_synthetic", architecture="mtan")
