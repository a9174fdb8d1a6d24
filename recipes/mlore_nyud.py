"""MLoRE on NYUD-v2 with the paper's settings (Yang et al., CVPR 2024; nyud_vitLp16_MLoRE.yml).

ViT-L/16 (keras-hub ``vit_large_patch16_384_imagenet``), 448x576, semseg, depth, normals and
edges with the loss weights 1, 1, 10, 50 and the edge positive weight 0.88, decoder width 768,
15 experts of ranks 16 to 240, task-specific rank 16, top-9 routing, Adam lr 1e-5, weight decay
1e-6, batch 2, 40,000 iterations, poly schedule, the released configuration's gradient clipping
(global norm 10, ``clip_norm``) and its load-balancing loss with weight 5e-4 (``balance_weight``,
``loss_weights.load_balancing: 0.0005`` in the configuration). The paper reports 55.96 mIoU,
0.5076 RMSE, 18.33 mean angle, 78.43 odsF.
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.nyud(
        "mlore_nyud",
        "mlore",
        1e-5,
        head_kwargs={
            "channels": 768,
            "ranks": list(range(16, 241, 16)),
            "specific_rank": 16,
            "top_k": 9,
            "balance_weight": 5e-4,
        },
        clip_norm=10.0,
        task_options={"edges": {"pos_weight": 0.88}},
    )
