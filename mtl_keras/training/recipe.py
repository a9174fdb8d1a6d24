"""Typed experiment configuration: a `Recipe` is everything one training run needs.

Recipes are plain Python functions in the top-level ``recipes/`` package returning a `Recipe`;
the command line overrides fields with ``--set key=value`` (values parsed as JSON, falling back to
plain strings).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mtl_keras.training.recipe_checks import check_recipe


@dataclasses.dataclass
class Recipe:
    """One experiment: data, model, balancing, optimisation, outputs.

    The defaults follow the survey's recipe (Adam, lr 1e-4, weight decay 1e-4, poly schedule with
    power 0.9, batch 8; Vandenhende et al., TPAMI 2022, Sec. 5) except the learning rate, which the
    small from-scratch models here train faster with.

    ``seed`` seeds initialisation, shuffling and stochastic balancers (``data_seed`` the synthetic
    scenes); ``deterministic`` also turns on TensorFlow's op determinism. ``strategy``,
    ``precision``, ``worker_timeout`` and ``resume`` are described in ``docs/scale_out.md``.

    ``architecture_kwargs`` go to the architecture's builder (e.g. ``{"alpha": 0.8, "beta": 0.05}``
    for cross-stitch units); the builder's other arguments are recipe fields. Soft-sharing
    networks (``mtl_keras.architectures.SOFT_SHARING_ARCHITECTURES``) may start from trained
    single-task networks, as the survey's do (Sec. 5): ``init_from_single_task`` is ``None``
    (from scratch), ``{task: checkpoint path}``, or ``"train"``: train each task's single-task
    run first where it has not finished (see ``docs/architectures.md``).

    ``backbone_weights`` starts the project's (dilated) ResNet from pretrained weights, e.g.
    ImageNet's: a local keras-hub ResNet v1 preset folder (written once by
    ``copy_keras_hub_preset("resnet_50_imagenet", "weights/resnet_50_imagenet")``) or an ``.npz``
    (``save_backbone_weights``, ``convert_keras_hub_resnet``, ``convert_torchvision_resnet``).
    Every ResNet copy of the network gets them (each task column of cross-stitch, sluice and
    NDDR networks); see :func:`~mtl_keras.training.building.build_network`. keras-hub backbones
    (``backbone="preset:<folder>"``) bring their own pretrained weights and take none.

    Every field's type and range is checked when a recipe is made
    (:func:`~mtl_keras.training.recipe_checks.check_recipe`), so also after
    ``dataclasses.replace`` and ``--set``: a bad value fails before anything runs, with
    ``recipe field epochs must be an integer >= 1, got 'abc' (e.g. --set epochs=10)``.
    """

    name: str
    tasks: tuple[str, ...] = ("semseg", "depth", "normals", "edges", "saliency", "human_parts")
    task_options: dict = dataclasses.field(default_factory=dict)
    #: tasks predicted only as deep supervision (PAD-Net's and MTI-Net's auxiliary tasks), with
    #: fixed weights outside the balancer (``auxiliary_weights``, default 1 each)
    auxiliary_tasks: tuple[str, ...] = ()
    auxiliary_weights: dict = dataclasses.field(default_factory=dict)
    # data
    dataset: str = "synthetic"
    image_size: tuple[int, int] = (64, 64)
    train_examples: int | None = 512
    val_examples: int | None = 128
    data_seed: int = 0
    data_dir: str | None = None
    manual_dir: str | None = None
    augment: bool = True
    # model
    architecture: str = "hard_sharing"
    backbone: str = "resnet18"
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    #: pretrained weights of the project's ResNet (``backbone="resnet50"``, ...): a local keras-hub
    #: ResNet preset folder or an ``.npz`` (``mtl_keras.backbones.weights``); None: from scratch
    backbone_weights: str | None = None
    head: str = "hrnet"
    head_kwargs: dict = dataclasses.field(default_factory=dict)
    architecture_kwargs: dict = dataclasses.field(default_factory=dict)
    init_from_single_task: str | dict | None = None
    # balancing
    balancer: str = "fixed"
    balancer_kwargs: dict = dataclasses.field(default_factory=dict)
    gradient_source: str = "auto"
    #: log per-task gradient norms, cosines and conflicts (None: for gradient-level balancers)
    gradient_statistics: bool | None = None
    #: ASTMT's adversarial task discriminator on loss gradients (> 0: its weight in the
    #: objective; needs architecture="astmt", see mtl_keras.training.adversarial)
    adversarial_weight: float = 0.0
    # optimisation
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: clip the global norm of every step's gradient (the global batch's, on any number of
    #: replicas: mtl_keras.training.clipping); None: no clipping
    clip_norm: float | None = None
    schedule: str = "poly"
    poly_power: float = 0.9
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int | None = None
    seed: int = 0
    deterministic: bool = False
    jit_compile: Any = "auto"
    precision: str = "float32"
    # scale-out and resilience (docs/scale_out.md)
    strategy: str = "default"
    worker_timeout: float = 120.0
    resume: bool = True
    # outputs
    run_dir: str = "runs"
    #: the run folder's name in ``run_dir`` (None: the recipe's name); ``mtl-keras train
    #: --new-run`` picks the next free one (``resume.new_run``)
    run_name: str | None = None
    export_dir: str = "saved_models"
    export_version: int | None = None
    baselines: str | None = None
    image_summaries: int = 4

    def __post_init__(self):
        check_recipe(self)

    @property
    def output_dir(self) -> str:
        return f"{self.run_dir}/{self.run_name or self.name}"

    def with_overrides(self, assignments: list[str] | None) -> Recipe:
        """Apply ``key=value`` strings; values are JSON (``lr=1e-3``, ``tasks=["semseg"]``)."""
        fields = {f.name for f in dataclasses.fields(self)}
        changes = {}
        for item in assignments or []:
            if "=" not in item:
                raise ValueError(f"--set expects key=value, got {item!r}")
            key, raw = item.split("=", 1)
            key = key.strip()
            if key not in fields:
                raise ValueError(
                    f"unknown recipe field {key!r}; valid fields: {', '.join(sorted(fields))}"
                )
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            if key in ("tasks", "auxiliary_tasks") and isinstance(value, str):
                value = tuple(v for v in value.split(",") if v)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
