"""The transformer-era protocol as base recipes: InvPT's and MLoRE's released configurations.

InvPT (Ye & Xu, ECCV 2022), TaskPrompter and MLoRE (Yang et al., CVPR 2024) share one protocol
(their released ``configs/{nyud,pascal}/*_vitLp16*.yml``): a ViT-L/16 encoder (timm's
``vit_large_patch16_384``, ImageNet-21k pre-training fine-tuned on ImageNet-1k at 384 px; here
keras-hub's ``vit_large_patch16_384_imagenet`` preset), NYUD-v2 at 448x576 with semseg, depth,
normals and edges all predicted and evaluated (not the survey's auxiliary normals and edges),
PASCAL-Context at 512x512 with its five tasks, the survey's fixed loss weights, Adam with weight
decay 1e-6, batch 2, 40,000 iterations and a poly schedule (power 0.9). :func:`nyud` and
:func:`pascal` build that setting; the recipes pass their learning rate and decoder.

The encoder loads by its keras-hub handle (downloaded once by keras-hub, then cached) or, offline,
from a local folder: ``--set backbone=preset:/path/to/vit_large_patch16_384_imagenet`` (a folder
written by ``save_to_preset``, see the README). :func:`synthetic` replaces it by a tiny ViT trained
from scratch on the synthetic scenes.
"""

from __future__ import annotations

from mtl_keras.recipes import _survey

from mtl_keras.training.recipe import Recipe

#: the papers' encoder: ViT-L/16 at 384 px (ImageNet-21k, fine-tuned on ImageNet-1k)
VIT_LARGE = "preset:vit_large_patch16_384_imagenet"
#: 40,000 iterations of batch 2 as 100 epochs of 400 steps (the training stream repeats)
ITERATIONS = {"steps_per_epoch": 400, "epochs": 100}
#: a ViT small enough for the synthetic scenes on CPU (8-pixel patches: an 8x8 grid at 64 px)
TINY_VIT = {
    "patch_size": 8,
    "num_layers": 4,
    "num_heads": 4,
    "hidden_dim": 64,
    "mlp_dim": 128,
    "image_shape": (64, 64, 3),
}

_COMMON = {
    "backbone": VIT_LARGE,
    "backbone_kwargs": {},
    "balancer": "fixed",
    "optimizer": "adam",
    "weight_decay": 1e-6,
    "schedule": "poly",
    "poly_power": 0.9,
    "batch_size": 2,
    "train_examples": None,
    "val_examples": None,
    **ITERATIONS,
}


def nyud(name: str, architecture: str, learning_rate: float, **changes) -> Recipe:
    """NYUD-v2 as InvPT and MLoRE train it: semseg, depth, normals and edges at 448x576 with the
    survey's loss weights (1, 1, 10, 50), ViT-L/16, Adam (weight decay 1e-6), batch 2, 40,000
    iterations, poly schedule."""
    tasks = ("semseg", "depth", "normals", "edges")
    fields = {
        **_COMMON,
        "dataset": "nyud",
        "tasks": tasks,
        "image_size": (448, 576),
        "balancer_kwargs": {"weights": {t: _survey.NYUD_WEIGHTS[t] for t in tasks}},
        "architecture": architecture,
        "head": architecture,
        "learning_rate": learning_rate,
    }
    return Recipe(name=name, **{**fields, **changes})


def pascal(name: str, architecture: str, learning_rate: float, **changes) -> Recipe:
    """PASCAL-Context as InvPT and MLoRE train it: the five tasks at 512x512 with the survey's
    loss weights, ViT-L/16, Adam (weight decay 1e-6), batch 2, 40,000 iterations, poly
    schedule."""
    tasks = _survey.PASCAL_TASKS
    fields = {
        **_COMMON,
        "dataset": "pascal_context",
        "tasks": tasks,
        "image_size": (512, 512),
        "balancer_kwargs": {"weights": {t: _survey.PASCAL_WEIGHTS[t] for t in tasks}},
        "architecture": architecture,
        "head": architecture,
        "learning_rate": learning_rate,
    }
    return Recipe(name=name, **{**fields, **changes})


def synthetic(name: str, architecture: str, **changes) -> Recipe:
    """The synthetic base setting (:func:`._survey.synthetic`: six tasks at 64x64, Adam 2e-3,
    8 epochs) with a tiny ViT encoder (:data:`TINY_VIT`, from scratch) and ``architecture``'s
    own decoder."""
    return _survey.synthetic(
        name,
        architecture=architecture,
        backbone="keras_hub.ViTBackbone",
        backbone_kwargs=dict(TINY_VIT),
        head=architecture,
        **changes,
    )
