"""The survey's settings as base recipes (Vandenhende et al., TPAMI 2022, Sec. 5).

The base recipes (``mtan_*``, ``padnet_*``, ``demo``, ``jtrl_nyud``) call :func:`nyud`,
:func:`pascal` or :func:`synthetic` with only what differs (``**changes`` are recipe fields); the
other recipes replace fields of a base recipe. The survey trains every model with
fixed loss weights, weight decay 1e-4 and a poly learning-rate schedule (power 0.9); its two
backbone settings are a dilated ResNet (output stride 8) with a DeepLab-v3 head per task and
HRNet-18 with HRNet heads (:func:`backbone_setting`).
"""

from __future__ import annotations

from mtl_keras.training.recipe import Recipe

#: the survey's fixed loss weights on NYUD-v2 (normals and edges are its auxiliary tasks)
NYUD_WEIGHTS = {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edges": 50.0}
#: the survey's fixed loss weights on PASCAL-Context
PASCAL_WEIGHTS = {
    "semseg": 1.0,
    "human_parts": 2.0,
    "saliency": 5.0,
    "edges": 50.0,
    "normals": 10.0,
}
#: the five PASCAL-Context tasks of the survey, in its order
PASCAL_TASKS = ("semseg", "human_parts", "saliency", "normals", "edges")

#: what every survey recipe shares: fixed weights, weight decay 1e-4, poly schedule (power 0.9)
_COMMON = {
    "balancer": "fixed",
    "weight_decay": 1e-4,
    "schedule": "poly",
    "poly_power": 0.9,
}


def backbone_setting(backbone: str) -> dict:
    """The survey's setting of ``backbone``: a ResNet dilated to output stride 8 with DeepLab-v3
    heads, or an HRNet with HRNet heads."""
    if backbone.startswith("resnet"):
        return {"backbone": backbone, "backbone_kwargs": {"output_stride": 8}, "head": "deeplab"}
    return {"backbone": backbone, "head": "hrnet"}


def _benchmark(name, dataset, tasks, image_size, weights, backbone, changes) -> Recipe:
    fields = {
        **_COMMON,
        "dataset": dataset,
        "tasks": tuple(tasks),
        "image_size": image_size,
        "train_examples": None,
        "val_examples": None,
        **backbone_setting(backbone),
        "balancer_kwargs": {"weights": {t: weights[t] for t in tasks}},
        "optimizer": "adam",
        "learning_rate": 1e-4,
        "batch_size": 8,
        "epochs": 100,
    }
    return Recipe(name=name, **{**fields, **changes})


def nyud(name: str, tasks=("semseg", "depth"), backbone: str = "resnet50", **changes) -> Recipe:
    """NYUD-v2: ``tasks`` at 480x640 with the survey's loss weights, the full splits, Adam 1e-4,
    batch 8, 100 epochs, and the survey's setting of ``backbone`` (:func:`backbone_setting`)."""
    return _benchmark(name, "nyud", tasks, (480, 640), NYUD_WEIGHTS, backbone, changes)


def pascal(name: str, tasks=PASCAL_TASKS, backbone: str = "hrnet18", **changes) -> Recipe:
    """PASCAL-Context: ``tasks`` at 512x512 with the survey's loss weights, the full splits,
    Adam 1e-4, batch 8, 100 epochs, and the survey's setting of ``backbone``."""
    return _benchmark(name, "pascal_context", tasks, (512, 512), PASCAL_WEIGHTS, backbone, changes)


def synthetic(name: str, **changes) -> Recipe:
    """The synthetic scenes, all six tasks, on CPU in minutes: 64x64, 1,024 / 128 images,
    ResNet-18 (width 16, output stride 16) with HRNet-style heads, the survey's optimiser (Adam,
    weight decay 1e-4, poly schedule, batch 8) with learning rate 2e-3 (the models train from
    scratch here), 8 epochs, uniform loss weights."""
    fields = {
        **_COMMON,
        "image_size": (64, 64),
        "train_examples": 1024,
        "val_examples": 128,
        "backbone": "resnet18",
        "backbone_kwargs": {"width": 16, "output_stride": 16},
        "head": "hrnet",
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "batch_size": 8,
        "epochs": 8,
    }
    return Recipe(name=name, **{**fields, **changes})
