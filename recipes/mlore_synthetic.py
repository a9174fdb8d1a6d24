"""MLoRE on the synthetic scenes, all six tasks, at 64x64 on CPU, with a tiny ViT.

Yang et al., "Multi-Task Dense Prediction via Mixture of Low-Rank Experts", CVPR 2024: 48
channels, six shared low-rank experts (ranks 4 to 24, the top 4 routed per task and image), a
task-specific path of rank 4 and the generic path, on the encoder of ``dpt_synthetic`` with the
synthetic base setting (Adam 2e-3, weight decay 1e-4, poly schedule, batch 8, 8 epochs). Its
first step (graph tracing of 6 tasks x 8 modules) took 6 minutes on 2 shared cores, DPT's 1,
with Keras's Adam; recipes' Adam now builds about half the graph (docs/architectures.md, "Trace
times").
"""

from mtl_keras.recipes import _transformer


def recipe():
    return _transformer.synthetic(
        "mlore_synthetic",
        "mlore",
        head_kwargs={
            "channels": 48,
            "ranks": [4, 8, 12, 16, 20, 24],
            "specific_rank": 4,
            "top_k": 4,
        },
    )
