"""InvPT on the synthetic scenes, all six tasks, at 64x64 on CPU, with a tiny ViT.

Ye & Xu, "Inverted Pyramid Multi-task Transformer for Dense Scene Understanding", ECCV 2022:
preliminary predictions (supervised), three multi-task attention stages of width 48, 24 and 12
(``embed_dim`` 32 plus 16 prediction channels), the encoder of ``dpt_synthetic`` and the synthetic
base setting (Adam 2e-3, weight decay 1e-4, poly schedule, batch 8, 8 epochs).
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.synthetic(
        "invpt_synthetic", "invpt", head_kwargs={"embed_dim": 32, "prediction_channels": 16}
    )
