"""Multi-task DPT on the synthetic scenes, all six tasks, at 64x64 on CPU, with a tiny ViT.

Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021: one reassemble-and-fusion
decoder per task (32 fusion channels) on a 4-layer ViT of width 64 with 8-pixel patches, trained
from scratch with the synthetic base setting (Adam 2e-3, weight decay 1e-4, poly schedule,
batch 8, 8 epochs). The InvPT and MLoRE synthetic recipes use the same encoder.
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.synthetic("dpt_synthetic", "dpt", head_kwargs={"features": 32})
