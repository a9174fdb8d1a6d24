"""Typed experiment configuration: a `Recipe` is everything one training run needs.

Recipes are plain Python functions in the top-level ``recipes/`` package returning a `Recipe`;
the command line overrides fields with ``--set key=value`` (values parsed as JSON, falling back to
plain strings).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

from mtl_keras._names import spelling_key
from mtl_keras.architectures.init_from_single_task import check_architecture
from mtl_keras.tasks import available as available_tasks
from mtl_keras.training.distribute import STRATEGIES
from mtl_keras.training.precision import PRECISIONS

#: Builder arguments that come from their own recipe fields (``run.build_network``), not from
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

    Every field's type and range is checked when a recipe is made, so also after
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
    export_dir: str = "saved_models"
    export_version: int | None = None
    baselines: str | None = None
    image_summaries: int = 4

    def __post_init__(self):
        self._check_values()
        unknown = [t for t in (*self.tasks, *self.auxiliary_tasks) if t not in available_tasks()]
        if unknown:
            raise ValueError(
                f"recipe {self.name!r} names unknown task(s) {unknown}; valid tasks: "
                f"{', '.join(available_tasks())}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"recipe {self.name!r}: unknown strategy {self.strategy!r}; valid: "
                f"{', '.join(STRATEGIES)}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"recipe {self.name!r}: unknown precision {self.precision!r}; valid: "
                f"{', '.join(PRECISIONS)}"
            )
        self._check_architecture_fields()

    def _check_values(self) -> None:
        """Each field's type and range, so a bad value fails here and not in the middle of a run
        (``dataclasses.replace`` and ``--set`` overrides come through here too)."""
        for field, (check, expected, example) in _FIELD_CHECKS.items():
            if not check(getattr(self, field)):
                raise _field_error(field, expected, getattr(self, field), example)
        for field, example in _DICT_FIELDS.items():
            if not isinstance(getattr(self, field), Mapping):
                raise _field_error(field, "a dict (a JSON object)", getattr(self, field), example)
        self.tasks = _task_names("tasks", self.tasks, "semseg,depth", minimum=1)
        self.auxiliary_tasks = _task_names(
            "auxiliary_tasks", self.auxiliary_tasks, "normals,edges", minimum=0
        )
        size = self.image_size
        if not (
            isinstance(size, (list, tuple)) and len(size) == 2 and all(_integer(v, 1) for v in size)
        ):
            raise _field_error("image_size", "[height, width], two integers >= 1", size, "[64,64]")
        self.image_size = tuple(int(v) for v in size)
        self._check_example_counts()
        self._check_weights()

    def _check_example_counts(self) -> None:
        synthetic = spelling_key(self.dataset) == "synthetic"
        for field, example in (("train_examples", "512"), ("val_examples", "128")):
            value = getattr(self, field)
            if synthetic and not _integer(value, 1):
                raise _field_error(field, "an integer >= 1", value, example)
            if not synthetic and not (value is None or _integer(value, 1)):
                expected = "null (the whole split) or an integer >= 1"
                raise _field_error(field, expected, value, example)
        if self.train_examples is not None and self.train_examples < self.batch_size:
            raise ValueError(
                f"recipe field train_examples={self.train_examples} is smaller than batch_size="
                f"{self.batch_size}, so training would see no full batch; raise train_examples "
                f"or lower batch_size (e.g. --set batch_size={self.train_examples})"
            )

    def _check_weights(self) -> None:
        """Loss weights (``auxiliary_weights``, the fixed balancer's ``weights``): finite, >= 0."""
        for task, value in self.auxiliary_weights.items():
            if not _number(value, 0.0):
                raise _field_error(
                    f"auxiliary_weights[{task!r}]",
                    ">= 0 (a finite number)",
                    value,
                    json.dumps({task: 1}),
                    "auxiliary_weights",
                )
        weights = self.balancer_kwargs.get("weights")
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

    def _check_architecture_fields(self) -> None:
        fields = sorted(set(self.architecture_kwargs) & set(RECIPE_BUILD_ARGUMENTS))
        if fields:
            raise ValueError(
                f"recipe {self.name!r}: architecture_kwargs may not set {fields}; they are recipe "
                "fields, set those instead"
            )
        init = self.init_from_single_task
        if init is None:
            return
        if not (init == "train" or isinstance(init, dict)):
            raise ValueError(
                f"recipe {self.name!r}: init_from_single_task must be None (from scratch), "
                f'"train" or {{task: checkpoint path}}, got {init!r}'
            )
        check_architecture(self.architecture)
        if isinstance(init, dict) and set(init) != set(self.tasks):
            raise ValueError(
                f"recipe {self.name!r}: init_from_single_task names the tasks {sorted(init)}; "
                f"give one checkpoint for each task of {list(self.tasks)}"
            )

    @property
    def output_dir(self) -> str:
        return f"{self.run_dir}/{self.name}"

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
