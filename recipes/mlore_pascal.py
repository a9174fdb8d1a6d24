"""MLoRE on PASCAL-Context with the paper's settings (Yang et al., CVPR 2024; pascal_vitLp16_MLoRE).

ViT-L/16 (keras-hub ``vit_large_patch16_384_imagenet``), 512x512, the five tasks with the
survey's loss weights and the edge positive weight 0.925, decoder width 452, 15 experts of ranks
16 to 128, task-specific rank 72, top-9 routing, Adam lr 2e-5, weight decay 1e-6, batch 2,
40,000 iterations, poly schedule, gradient clipping (global norm 10, ``clip_norm``), the
load-balancing loss with weight 3e-4 (``balance_weight``, ``loss_weights.load_balancing: 0.0003``
in the configuration). The paper reports 81.41 mIoU, 70.52 parts mIoU, 84.90 saliency maxF,
13.51 mean angle, 75.42 odsF.
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.pascal(
        "mlore_pascal",
        "mlore",
        2e-5,
        head_kwargs={
            "channels": 452,
            "ranks": list(range(16, 129, 8)),
            "specific_rank": 72,
            "top_k": 9,
            "balance_weight": 3e-4,
        },
        clip_norm=10.0,
        task_options={"edges": {"pos_weight": 0.925}},
    )
