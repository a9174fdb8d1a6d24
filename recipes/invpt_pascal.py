"""InvPT on PASCAL-Context with the paper's settings (Ye & Xu, ECCV 2022; pascal_vitLp16.yml).

ViT-L/16 (keras-hub ``vit_large_patch16_384_imagenet``), 512x512, the five tasks with the
survey's loss weights, preliminary predictions supervised, ``embed_dim`` 512 and 64 prediction
channels, Adam lr 2e-5, weight decay 1e-6, batch 2, 40,000 iterations, poly schedule. The paper
reports 79.03 mIoU, 67.61 parts mIoU, 84.81 saliency maxF, 14.15 mean angle, 73.00 odsF.
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.pascal(
        "invpt_pascal",
        "invpt",
        2e-5,
        head_kwargs={"embed_dim": 512, "prediction_channels": 64},
    )
