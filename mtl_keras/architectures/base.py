"""What every architecture shares: input normalisation and the declaration of what is shared.

An architecture builder returns a plain functional ``keras.Model`` mapping raw images to a dict
``{task: prediction}`` (plus deep-supervision outputs keyed ``"{task}/{tag}"``). It declares its
shared representation by passing those tensors through :class:`SharedRepresentation`, an identity
layer whose type (not its name) marks them. The shared variables are then read off the graph: a
variable is shared when more than one task's outputs depend on it. Nothing here or in the trainer
guesses from layer names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import keras
import tensorflow as tf
from keras import ops

from mtl_keras import tasks as tasks_lib

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="mtl_keras")
class ImageNormalization(keras.layers.Layer):
    """Raw pixels (uint8 or float in 0..255) -> ``(x / 255 - mean) / std`` in float32."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = tuple(mean), tuple(std)

    def call(self, images):
        x = ops.cast(images, self.compute_dtype) / 255.0
        mean = ops.convert_to_tensor(self.mean, self.compute_dtype)
        std = ops.convert_to_tensor(self.std, self.compute_dtype)
        return (x - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="mtl_keras")
class SharedRepresentation(keras.layers.Layer):
    """Identity that marks a tensor as (part of) the shared representation ``z``.

    Gradient-level balancers in ``"representation"`` mode take per-task gradients with respect to
    all tensors so marked; every path from the shared variables to the task outputs must pass
    through them.
    """

    def call(self, x):
        # a distinct tensor: when several pyramid levels are marked and a later level is
        # computed from an earlier one inside the encoder, the gradient with respect to the
        # marked earlier level must not include the paths through the later level
        return tf.identity(x)


@keras.saving.register_keras_serializable(package="mtl_keras")
class TaskOutput(keras.layers.Layer):
    """Identity on one output that records the TaskSpec it was built for (``spec.get_config()``).

    Builders pass every output through one (:func:`mark_task_outputs`), so the network itself
    knows its tasks, class counts and options, also after a ``.keras`` round trip:
    :func:`task_specs_of` reads them back, and ``MultiTaskModel(network)`` needs no TaskSpecs.
    It computes nothing and, whatever the dtype policy, leaves the output's dtype as it is.
    """

    def __init__(self, task: Mapping | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(autocast=False, **kwargs)
        self.task = dict(task or {})

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "task": self.task}


def mark_task_outputs(outputs: Mapping, specs: Mapping) -> dict:
    """``outputs`` with each one passed through a :class:`TaskOutput` holding its task's spec.

    Args:
        outputs: ``{output key: tensor}``; deep-supervision keys ``"{task}/{tag}"`` included.
        specs: ``{task: TaskSpec}`` of every task an output supervises (auxiliary ones too).
    """
    return {
        key: TaskOutput(specs[task_of(key)].get_config(), name=f"task_output_{_layer_name(key)}")(
            tensor
        )
        for key, tensor in outputs.items()
    }


def _layer_name(key: str) -> str:
    return key.replace("/", "_")


def task_specs_of(network: keras.Model) -> dict:
    """``{task: TaskSpec}`` recorded by the network's :class:`TaskOutput` markers, in output
    order (auxiliary tasks included); tasks whose spec is not rebuildable from the task registry
    (a custom TaskSpec) and networks without markers are left out."""
    outputs = network.output if isinstance(network.output, dict) else {}
    specs = {}
    for key, tensor in outputs.items():
        history = getattr(tensor, "_keras_history", None)
        layer = history.operation if history is not None else None
        task = task_of(key)
        if not isinstance(layer, TaskOutput) or task in specs or not layer.task:
            continue
        if layer.task.get("name") not in tasks_lib.available():
            continue
        specs[task] = tasks_lib.from_config(layer.task)
    return specs


def is_auxiliary(output_name: str) -> bool:
    """Deep-supervision outputs are keyed ``"{task}/{tag}"``."""
    return "/" in output_name


def task_of(output_name: str) -> str:
    """The task an output supervises (``"depth/scale_2"`` -> ``"depth"``)."""
    return output_name.split("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class Sharing:
    """What the trainer needs to know about a network's sharing.

    Attributes:
        shared_variables: trainable variables that more than one task depends on.
        task_variables: trainable variables only one task depends on.
        representation_layers: the :class:`SharedRepresentation` layers (empty for networks that
            declare none, e.g. soft sharing with no single shared tensor).
        representation_variables: trainable variables upstream of the representation; every path
            from them to an output passes through it (checked), so their gradient is the
            representation's gradient pulled back through the encoder.
    """

    shared_variables: tuple
    task_variables: tuple
    representation_layers: tuple
    representation_variables: tuple


def _ancestors(tensor, stop_at: type | None = None) -> set:
    """All operations (layers, nested models) the tensor depends on.

    With ``stop_at``, operations of that type are included but not walked through.
    """
    seen: dict[int, object] = {}
    stack = [tensor]
    while stack:
        t = stack.pop()
        history = getattr(t, "_keras_history", None)
        if history is None:
            continue
        op = history.operation
        if id(op) in seen:
            continue
        seen[id(op)] = op
        if stop_at is not None and isinstance(op, stop_at):
            continue
        node = op._inbound_nodes[history.node_index]
        stack.extend(node.input_tensors)
    return set(seen.values())


def _variables(ops) -> dict[int, object]:
    return {id(v): v for op in ops for v in op.trainable_variables}


def sharing_of(network: keras.Model) -> Sharing:
    """Read the sharing declared by an architecture's functional graph."""
    outputs = network.output
    if not isinstance(outputs, dict):
        raise ValueError(
            f"model {network.name!r} must return a dict keyed by task name, got "
            f"{type(outputs).__name__}; build it with an mtl_keras architecture builder"
        )
    users: dict[int, set] = {}
    by_id: dict[int, object] = {}
    markers: dict[int, SharedRepresentation] = {}
    for out_name, tensor in outputs.items():
        for op in _ancestors(tensor):
            if isinstance(op, SharedRepresentation):
                markers[id(op)] = op
            for k, v in _variables([op]).items():
                users.setdefault(k, set()).add(task_of(out_name))
                by_id[k] = v
    upstream = {}
    for marker in markers.values():
        upstream.update(_variables(_ancestors(marker.input)))
    if upstream:
        around = {}
        for out_name, tensor in outputs.items():
            leaked = set(_variables(_ancestors(tensor, stop_at=SharedRepresentation))) & set(
                upstream
            )
            if leaked:
                around[out_name] = sorted(upstream[k].path for k in leaked)[:3]
        if around:
            raise ValueError(
                f"model {network.name!r}: outputs {sorted(around)} depend on encoder variables "
                f"(e.g. {next(iter(around.values()))}) through a path that avoids every "
                "SharedRepresentation; mark every encoder tensor the heads read"
            )
    order = {id(v): i for i, v in enumerate(network.trainable_variables)}

    def sort(ids):
        return tuple(
            sorted(
                (by_id[k] if k in by_id else upstream[k] for k in ids), key=lambda v: order[id(v)]
            )
        )

    return Sharing(
        shared_variables=sort(k for k, t in users.items() if len(t) > 1),
        task_variables=sort(k for k, t in users.items() if len(t) == 1),
        representation_layers=tuple(markers.values()),
        representation_variables=sort(upstream),
    )
