"""InvPT on NYUD-v2 with the paper's settings (Ye & Xu, ECCV 2022; its released nyud_vitLp16.yml).

ViT-L/16 (keras-hub ``vit_large_patch16_384_imagenet``), 448x576, semseg, depth, normals and
edges all predicted with the loss weights 1, 1, 10, 50, preliminary predictions supervised,
``embed_dim`` 512 and 64 prediction channels, Adam lr 2e-5, weight decay 1e-6, batch 2, 40,000
iterations, poly schedule. The paper reports 53.56 mIoU, 0.5183 RMSE, 19.04 mean angle, 78.10
odsF.
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.nyud(
        "invpt_nyud",
        "invpt",
        2e-5,
        head_kwargs={"embed_dim": 512, "prediction_channels": 64},
    )
