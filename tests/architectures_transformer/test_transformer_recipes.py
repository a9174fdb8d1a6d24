"""The transformer-era recipes: the papers' protocol on NYUD-v2 and PASCAL-Context, tiny ViTs on
the synthetic scenes. Recipe fields only: no model is built, nothing downloads."""

import pytest

from mtl_keras import recipes
from mtl_keras.architectures import dpt, invpt, mlore

DECODERS = {"dpt": dpt, "invpt": invpt, "mlore": mlore}
#: Adam learning rates of the released configurations
PAPER_LR = {
    "invpt_nyud": 2e-5,
    "invpt_pascal": 2e-5,
    "mlore_nyud": 1e-5,
    "mlore_pascal": 2e-5,
    "dpt_nyud": 2e-5,  # InvPT's protocol
    "dpt_pascal": 2e-5,
}


@pytest.mark.parametrize("name", sorted(PAPER_LR))
def test_paper_recipes_follow_the_released_configurations(name):
    r = recipes.get(name)
    arch, dataset = name.split("_")
    assert (r.architecture, r.head) == (arch, arch)
    assert set(r.head_kwargs) <= set(DECODERS[arch].DEFAULTS)
    assert r.backbone == "preset:vit_large_patch16_384_imagenet"
    assert r.learning_rate == PAPER_LR[name] and r.weight_decay == 1e-6
    assert (r.optimizer, r.schedule, r.batch_size) == ("adam", "poly", 2)
    assert r.steps_per_epoch * r.epochs == 40_000
    size, weights = {
        "nyud": ((448, 576), {"semseg": 1, "depth": 1, "normals": 10, "edges": 50}),
        "pascal": (
            (512, 512),
            {"semseg": 1, "human_parts": 2, "saliency": 5, "edges": 50, "normals": 10},
        ),
    }[dataset]
    assert r.image_size == size and r.balancer_kwargs["weights"] == weights
    assert set(r.tasks) == set(weights) and not r.auxiliary_tasks


@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_synthetic_recipes_use_a_tiny_vit(arch):
    r = recipes.get(f"{arch}_synthetic")
    assert (r.dataset, r.architecture, r.head) == ("synthetic", arch, arch)
    assert r.backbone == "keras_hub.ViTBackbone" and r.backbone_kwargs["hidden_dim"] <= 64
    assert set(r.head_kwargs) <= set(DECODERS[arch].DEFAULTS)
    assert r.image_size == (64, 64)
