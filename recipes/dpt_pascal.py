"""Multi-task DPT on PASCAL-Context under InvPT's protocol (Ranftl et al., ICCV 2021).

The transformer-era hard-sharing baseline trained exactly as ``invpt_pascal`` (ViT-L/16,
512x512, the five tasks with the survey's loss weights, Adam lr 2e-5, weight decay 1e-6, batch
2, 40,000 iterations, poly schedule), with DPT-Large's decoder (see ``dpt_nyud``).
"""

from mtl_keras.recipes import _transformer
from mtl_keras.recipes.dpt_nyud import DPT_LARGE


def recipe():
    return _transformer.pascal(
        "dpt_pascal", "dpt", 2e-5, backbone_kwargs=dict(DPT_LARGE), head_kwargs={"features": 256}
    )
