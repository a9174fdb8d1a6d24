"""The checks a `~mtl_keras.training.recipe.Recipe` passes when it is made.

Every field's type and range, the task names, the strategy, the precision and the architecture
fields are checked here, so a bad value fails before anything runs (``dataclasses.replace`` and
``--set`` overrides come through here too), with an error naming the field, what it must be, the
value given and an example ``--set``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

from mtl_keras._names import spelling_key
from mtl_keras.architectures.init_from_single_task import check_architecture
from mtl_keras.backbones import BACKBONES, is_keras_hub
from mtl_keras.backbones.weights import keras_hub_preset_depth, resnet_weights_kind
from mtl_keras.tasks import available as available_tasks
from mtl_keras.training.distribute import STRATEGIES
from mtl_keras.training.precision import PRECISIONS

#: Builder arguments that come from their own recipe fields (``building.build_network``), not from
#: ``architecture_kwargs``.
RECIPE_BUILD_ARGUMENTS = (
    "backbone",
    "backbone_kwargs",
    "head",
    "head_kwargs",
    "image_size",
    "task_options",
)


def _integer(value, low: int) -> bool:
    """An int (not a bool) ``>= low``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _number(value, low: float, *, above: bool = False) -> bool:
    """A finite real number (not a bool) ``>= low``, or ``> low`` with ``above``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value) and (value > low if above else value >= low)


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _optional(check):
    return lambda value: value is None or check(value)


def _boolean(value) -> bool:
    return isinstance(value, bool)


def _seed(value) -> bool:
    # NumPy takes seeds in [0, 2**32)
    return _integer(value, 0) and value < 2**32


#: ``{field: (check, what the field must be, an example value for --set)}``; ``tasks``,
#: ``image_size``, the example counts and the weights inside dicts are checked on their own
_FIELD_CHECKS = {
    "name": (_text, "a non-empty string", "my_run"),
    "dataset": (_text, "a dataset name", "synthetic"),
    "data_seed": (_seed, "an integer in [0, 2**32)", "0"),
    "data_dir": (_optional(_text), "null or a folder", "/data/tfds"),
    "manual_dir": (_optional(_text), "null or a folder", "/data/manual"),
    "augment": (_boolean, "true or false", "false"),
    "architecture": (_text, "an architecture name", "hard_sharing"),
    "backbone": (_text, "a backbone name", "resnet18"),
    "backbone_weights": (
        _optional(_text),
        "null (no pretrained weights) or a local keras-hub ResNet preset folder or .npz file",
        "weights/resnet_50_imagenet",
    ),
    "head": (_text, "a head name", "hrnet"),
    "balancer": (_text, "a balancer name", "fixed"),
    "gradient_source": (_text, "a gradient source", "auto"),
    "gradient_statistics": (_optional(_boolean), "null, true or false", "true"),
    "adversarial_weight": (
        lambda v: _number(v, 0.0),
        ">= 0 (a finite number; 0: no adversarial discriminator)",
        "0.01",
    ),
    "optimizer": (_text, "an optimizer name", "adam"),
    "learning_rate": (lambda v: _number(v, 0.0, above=True), "> 0 (a finite number)", "1e-3"),
    "weight_decay": (lambda v: _number(v, 0.0), ">= 0 (a finite number)", "1e-4"),
    "clip_norm": (
        _optional(lambda v: _number(v, 0.0, above=True)),
        "null (no clipping) or > 0 (a finite number)",
        "10",
    ),
    "schedule": (_text, "a schedule name", "poly"),
    "poly_power": (lambda v: _number(v, 0.0), ">= 0 (a finite number)", "0.9"),
    "batch_size": (
        lambda v: _integer(v, 1),
        "an integer >= 1 (the global batch, split over all replicas)",
        "8",
    ),
    "epochs": (lambda v: _integer(v, 1), "an integer >= 1", "10"),
    "steps_per_epoch": (
        _optional(lambda v: _integer(v, 1)),
        "null (one pass over the training set) or an integer >= 1",
        "100",
    ),
    "seed": (_seed, "an integer in [0, 2**32)", "0"),
    "deterministic": (_boolean, "true or false", "true"),
    "jit_compile": (lambda v: v == "auto" or _boolean(v), '"auto", true or false', "false"),
    "worker_timeout": (
        lambda v: _number(v, 0.0, above=True),
        "> 0 (a finite number of seconds)",
        "120",
    ),
    "resume": (_boolean, "true or false", "false"),
    "run_dir": (_text, "a folder", "runs"),
    "run_name": (
        _optional(lambda v: _text(v) and "/" not in v and v not in (".", "..")),
        "null (the recipe's name) or a folder name without '/'",
        "demo-2",
    ),
    "export_dir": (_text, "a folder", "saved_models"),
    "export_version": (_optional(lambda v: _integer(v, 1)), "null or an integer >= 1", "2"),
    "baselines": (_optional(_text), "null or a result file or folder", "runs/baselines"),
    "image_summaries": (lambda v: _integer(v, 0), "an integer >= 0", "4"),
}
#: fields holding a dict, with an example value for --set
_DICT_FIELDS = {
    "task_options": '{"semseg": {"num_classes": 21}}',
    "auxiliary_weights": '{"edges": 50}',
    "backbone_kwargs": '{"width": 8}',
    "head_kwargs": '{"filters": 8}',
    "architecture_kwargs": '{"alpha": 0.9}',
    "balancer_kwargs": '{"weights": {"semseg": 1, "depth": 2}}',
}


def _field_error(
    name: str, expected: str, value, example: str, field: str | None = None
) -> ValueError:
    """``recipe field NAME must be EXPECTED, got VALUE (e.g. --set FIELD=EXAMPLE)``; ``field``
    (default ``name``) is the recipe field that holds ``name``."""
    setting = f"{field or name}={example}"
    if any(c in example for c in '{}[]" '):
        setting = f"'{setting}'"
    return ValueError(
        f"recipe field {name} must be {expected}, got {value!r} (e.g. --set {setting})"
    )


def _task_names(field: str, value, example: str, minimum: int) -> tuple[str, ...]:
    """``value`` as a tuple of task names (a list or tuple of strings)."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise _field_error(field, "a list of task names", value, example)
    names = tuple(value)
    if not all(isinstance(t, str) for t in names):
        raise _field_error(field, "a list of task names", value, example)
    if len(names) < minimum:
        raise _field_error(field, "a list of at least one task name", value, example)
    twice = sorted({t for t in names if names.count(t) > 1})
    if twice:
        raise ValueError(f"recipe field {field} lists {twice} more than once; name each task once")
    return names


def check_recipe(recipe: Any) -> None:
    """Check a `Recipe` as it is made (from its ``__post_init__``); normalises ``tasks``,
    ``auxiliary_tasks`` and ``image_size`` to tuples.

    Raises:
        ValueError: a field of the wrong type or out of range, an unknown task, strategy or
            precision, or architecture fields that do not fit together; the message names the
            field, what it must be, the value given and an example ``--set``.
    """
    _check_values(recipe)
    unknown = [t for t in (*recipe.tasks, *recipe.auxiliary_tasks) if t not in available_tasks()]
    if unknown:
        raise ValueError(
            f"recipe {recipe.name!r} names unknown task(s) {unknown}; valid tasks: "
            f"{', '.join(available_tasks())}"
        )
    if recipe.strategy not in STRATEGIES:
        raise ValueError(
            f"recipe {recipe.name!r}: unknown strategy {recipe.strategy!r}; valid: "
            f"{', '.join(STRATEGIES)}"
        )
    if recipe.precision not in PRECISIONS:
        raise ValueError(
            f"recipe {recipe.name!r}: unknown precision {recipe.precision!r}; valid: "
            f"{', '.join(PRECISIONS)}"
        )
    _check_architecture_fields(recipe)
    _check_backbone_weights(recipe)


def _check_values(recipe) -> None:
    """Each field's type and range, so a bad value fails here and not in the middle of a run
    (``dataclasses.replace`` and ``--set`` overrides come through here too)."""
    for field, (check, expected, example) in _FIELD_CHECKS.items():
        if not check(getattr(recipe, field)):
            raise _field_error(field, expected, getattr(recipe, field), example)
    for field, example in _DICT_FIELDS.items():
        if not isinstance(getattr(recipe, field), Mapping):
            raise _field_error(field, "a dict (a JSON object)", getattr(recipe, field), example)
    recipe.tasks = _task_names("tasks", recipe.tasks, "semseg,depth", minimum=1)
    recipe.auxiliary_tasks = _task_names(
        "auxiliary_tasks", recipe.auxiliary_tasks, "normals,edges", minimum=0
    )
    size = recipe.image_size
    if not (
        isinstance(size, (list, tuple)) and len(size) == 2 and all(_integer(v, 1) for v in size)
    ):
        raise _field_error("image_size", "[height, width], two integers >= 1", size, "[64,64]")
    recipe.image_size = tuple(int(v) for v in size)
    _check_example_counts(recipe)
    _check_weights(recipe)


def _check_example_counts(recipe) -> None:
    """``train_examples`` and ``val_examples`` (null allowed for real datasets): a full batch."""
    synthetic = spelling_key(recipe.dataset) == "synthetic"
    for field, example in (("train_examples", "512"), ("val_examples", "128")):
        value = getattr(recipe, field)
        if synthetic and not _integer(value, 1):
            raise _field_error(field, "an integer >= 1", value, example)
        if not synthetic and not (value is None or _integer(value, 1)):
            expected = "null (the whole split) or an integer >= 1"
            raise _field_error(field, expected, value, example)
    if recipe.train_examples is not None and recipe.train_examples < recipe.batch_size:
        raise ValueError(
            f"recipe field train_examples={recipe.train_examples} is smaller than batch_size="
            f"{recipe.batch_size}, so training would see no full batch; raise train_examples "
            f"or lower batch_size (e.g. --set batch_size={recipe.train_examples})"
        )


def _check_weights(recipe) -> None:
    """Loss weights (``auxiliary_weights``, the fixed balancer's ``weights``): finite, >= 0."""
    for task, value in recipe.auxiliary_weights.items():
        if not _number(value, 0.0):
            raise _field_error(
                f"auxiliary_weights[{task!r}]",
                ">= 0 (a finite number)",
                value,
                json.dumps({task: 1}),
                "auxiliary_weights",
            )
    weights = recipe.balancer_kwargs.get("weights")
    if weights is None:
        return
    if isinstance(weights, Mapping):
        items = list(weights.items())
    elif isinstance(weights, (list, tuple)):
        items = list(enumerate(weights))
    else:
        raise _field_error(
            "balancer_kwargs['weights']",
            "a list of weights in task order or a dict by task name",
            weights,
            '{"weights": {"semseg": 1, "depth": 2}}',
            "balancer_kwargs",
        )
    for key, value in items:
        if not _number(value, 0.0):
            raise _field_error(
                f"balancer_kwargs['weights'][{key!r}]",
                ">= 0 (a finite number)",
                value,
                '{"weights": {"semseg": 1, "depth": 2}}',
                "balancer_kwargs",
            )


def _check_architecture_fields(recipe) -> None:
    """``architecture_kwargs`` free of recipe fields; ``init_from_single_task`` that fits."""
    fields = sorted(set(recipe.architecture_kwargs) & set(RECIPE_BUILD_ARGUMENTS))
    if fields:
        raise ValueError(
            f"recipe {recipe.name!r}: architecture_kwargs may not set {fields}; they are recipe "
            "fields, set those instead"
        )
    init = recipe.init_from_single_task
    if init is None:
        return
    if not (init == "train" or isinstance(init, dict)):
        raise ValueError(
            f"recipe {recipe.name!r}: init_from_single_task must be None (from scratch), "
            f'"train" or {{task: checkpoint path}}, got {init!r}'
        )
    check_architecture(recipe.architecture)
    if isinstance(init, dict) and set(init) != set(recipe.tasks):
        raise ValueError(
            f"recipe {recipe.name!r}: init_from_single_task names the tasks {sorted(init)}; "
            f"give one checkpoint for each task of {list(recipe.tasks)}"
        )


#: the width of keras-hub's ResNets (and of build_resnet's default)
_IMAGENET_WIDTH = 64


def _resnet_depth(backbone: str) -> int | None:
    """The depth of the project's ResNet that ``backbone`` names (``"ResNet-50"``: 50), else
    None (HRNet, keras-hub backbones, unknown names)."""
    names = {spelling_key(n): n for n in BACKBONES if n.startswith("resnet")}
    name = names.get(spelling_key(backbone))
    return None if name is None else int(name.removeprefix("resnet"))


def _check_backbone_weights(recipe) -> None:
    """``backbone_weights``: set only on the project's ResNets, naming a local keras-hub ResNet
    preset folder of the backbone's depth and width or an ``.npz`` (whose keys and shapes are
    checked when the network is built)."""
    path = recipe.backbone_weights
    if path is None:
        return
    prefix = f"recipe {recipe.name!r}: backbone_weights={path!r}"
    drop = "or drop backbone_weights (--set backbone_weights=null)"
    if is_keras_hub(recipe.backbone):
        raise ValueError(
            f"{prefix} loads into the project's ResNets, but backbone {recipe.backbone!r} is a "
            "keras-hub backbone, which already gets its pretrained weights from its preset "
            "(backbone='preset:<handle or folder>'); drop backbone_weights (--set "
            "backbone_weights=null), or train the project's ResNet with them (e.g. --set "
            "backbone=resnet50)"
        )
    depth = _resnet_depth(recipe.backbone)
    if depth is None:
        resnets = ", ".join(n for n in BACKBONES if n.startswith("resnet"))
        raise ValueError(
            f"{prefix} loads into the project's ResNets ({resnets}), not into backbone "
            f"{recipe.backbone!r}; set the ResNet the weights belong to (e.g. --set "
            f"backbone=resnet50), {drop}. keras-hub backbones get their pretrained weights "
            "from backbone='preset:<handle or folder>' instead"
        )
    try:
        kind = resnet_weights_kind(path)
    except ValueError as e:
        raise ValueError(
            f"recipe {recipe.name!r}: backbone_weights {e} (e.g. --set "
            "backbone_weights=weights/resnet_50_imagenet)"
        ) from None
    if kind != "preset":
        return
    preset_depth = keras_hub_preset_depth(os.path.expanduser(path))
    if preset_depth != depth:
        raise ValueError(
            f"{prefix} holds a keras-hub ResNet-{preset_depth}, backbone {recipe.backbone!r} is a "
            f"ResNet-{depth}; use --set backbone=resnet{preset_depth}, or give the preset of a "
            f"ResNet-{depth}"
        )
    width = recipe.backbone_kwargs.get("width", _IMAGENET_WIDTH)
    if width != _IMAGENET_WIDTH:
        raise ValueError(
            f"{prefix} holds a keras-hub ResNet of width {_IMAGENET_WIDTH} (64 channels after "
            f"the stem), backbone_kwargs a width of {width!r}; remove width from backbone_kwargs"
        )
