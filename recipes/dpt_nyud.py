"""Multi-task DPT on NYUD-v2 under InvPT's protocol (Ranftl et al., ICCV 2021; Ye & Xu, 2022).

DPT has no multi-task NYUD-v2 setting of its own; this is the transformer-era hard-sharing
baseline trained exactly as ``invpt_nyud`` (ViT-L/16, 448x576, four tasks with the loss weights
1, 1, 10, 50, Adam lr 2e-5, weight decay 1e-6, batch 2, 40,000 iterations, poly schedule), with
DPT-Large's decoder: transformer layers 5, 11, 17 and 23 reassembled to 256, 512, 1024 and 1024
channels, 256 fusion features, one decoder per task.
"""

from mtl_keras.recipes import _transformer

#: DPT-Large's reassembly (Ranftl et al., Sec. 3 and their released code)
DPT_LARGE = {"transformer_layers": [5, 11, 17, 23], "pyramid_channels": [256, 512, 1024, 1024]}


def recipe():
    return _transformer.nyud(
        "dpt_nyud", "dpt", 2e-5, backbone_kwargs=dict(DPT_LARGE), head_kwargs={"features": 256}
    )
