"""Initialise soft-sharing networks from trained single-task networks.

The survey (Vandenhende et al., TPAMI 2022, Sec. 5) starts cross-stitch networks and NDDR-CNNs
from the trained single-task models (``single_task/<task>/best_model.pth.tar``): every task column
and head gets that task's weights, and only the mixing units start from their own
initialisation. Here:

1. :func:`load_single_task_networks` builds the single-task networks with the soft-sharing
   model's backbone and head settings and loads their checkpoints: a ``.keras`` file, the
   network's own ``.weights.h5``, or a ``MultiTaskModel`` training checkpoint
   (``runs/<recipe>/checkpoints/last.weights.h5``);
2. :func:`init_from_single_task` copies them into the columns: backbone layer ``L`` of task
   ``t``'s single-task network goes to layer ``L`` of the nested stage model ``f"{t}_{stage}"``,
   head layers (named ``f"{t}_..."`` in both) go to the layers of the same name.

Works for cross-stitch, sluice and NDDR networks (any network whose task columns are nested stage
models named ``f"{task}_{stage}"``): :data:`SOFT_SHARING_ARCHITECTURES`. A recipe's
``init_from_single_task`` field runs both steps (``mtl_keras.training.run``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import h5py
import keras

from mtl_keras.architectures._blocks import STAGES
from mtl_keras.architectures.hard_sharing import build_single_task
from mtl_keras.architectures.weights_file import WeightsMismatchError, load_weights_file
from mtl_keras.tasks import TaskSpec

#: Registry names (``mtl_keras.architectures.ARCHITECTURES``) of the architectures with the task
#: columns :func:`init_from_single_task` fills: the survey's soft-sharing models (Vandenhende et
#: al., TPAMI 2022, Sec. 3.1 and 5).
SOFT_SHARING_ARCHITECTURES = ("cross_stitch", "sluice", "nddr_cnn")


def check_architecture(architecture: str) -> None:
    """Fail unless networks of ``architecture`` can start from single-task networks."""
    if architecture not in SOFT_SHARING_ARCHITECTURES:
        raise ValueError(
            f"architecture {architecture!r} cannot start from single-task networks (it has no "
            f"task columns to copy them into); only {', '.join(SOFT_SHARING_ARCHITECTURES)} can"
        )


def _weighted_layers(model: keras.Model, nested: bool) -> dict[str, keras.Layer]:
    """Layers with weights by name; ``nested`` descends into nested models (one level)."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if nested:
                out.update({inner.name: inner for inner in layer.layers if inner.weights})
        elif layer.weights:
            out[layer.name] = layer
    return out


def init_from_single_task(
    network: keras.Model, sources: Mapping[str, keras.Model], *, heads: bool = True
) -> dict[str, int]:
    """Copy each task's single-task network into its column (and head) of ``network``.

    Args:
        network: a cross-stitch, sluice or NDDR network.
        sources: ``{task: trained single-task network}`` (e.g. from
            :func:`load_single_task_networks`), built with the same backbone and head.
        heads: also copy the heads (the survey does).

    Returns:
        ``{task: number of layers copied}``.

    Raises:
        ValueError: a task has no column in ``network``, or a layer's weights do not match
            (the message names the layer and both shapes). Nothing is assigned then.
    """
    assignments = []
    counts = {}
    for task, source in sources.items():
        columns = [
            layer
            for layer in network.layers
            if isinstance(layer, keras.Model) and layer.name in {f"{task}_{s}" for s in STAGES}
        ]
        if not columns:
            raise ValueError(
                f"network {network.name!r} has no column for task {task!r} (nested stage models "
                f"named '{task}_stage1', ...); initialise cross-stitch, sluice or NDDR networks"
            )
        targets = {inner.name: inner for c in columns for inner in c.layers if inner.weights}
        source_layers = _weighted_layers(source, nested=True)
        backbone_names = {
            inner.name
            for layer in source.layers
            if isinstance(layer, keras.Model)
            for inner in layer.layers
        }
        pairs = []
        for name, layer in source_layers.items():
            if name in backbone_names:
                if name not in targets:
                    raise ValueError(
                        f"backbone layer {name!r} of the {task!r} single-task network has no "
                        f"counterpart in the columns of {network.name!r}; build both with the "
                        "same backbone"
                    )
                pairs.append((targets[name], layer))
            elif heads:
                try:
                    pairs.append((network.get_layer(name), layer))
                except ValueError as e:
                    raise ValueError(
                        f"head layer {name!r} of the {task!r} single-task network is not in "
                        f"{network.name!r}; build both with the same head, or pass heads=False"
                    ) from e
        for target, layer in pairs:
            shapes = [tuple(w.shape) for w in target.weights]
            found = [tuple(w.shape) for w in layer.weights]
            if shapes != found:
                raise ValueError(
                    f"layer {target.name!r} of task {task!r}: {network.name!r} has weight shapes "
                    f"{shapes}, the single-task network {found}; build both with the same "
                    "backbone, widths and head"
                )
        assignments.extend(pairs)
        counts[task] = len(pairs)
    for target, layer in assignments:
        target.set_weights(layer.get_weights())
    return counts


def _load_weights_file(model: keras.Model, path: str) -> None:
    """Load a ``.weights.h5`` of the network itself, or of a trainer wrapping it.

    A file whose variables have other shapes than the network's is refused naming the first such
    variable and both shapes (:class:`~mtl_keras.architectures.weights_file.WeightsMismatchError`).
    """
    try:
        load_weights_file(model, path)
        return
    except WeightsMismatchError as first_error:
        error = mismatch = first_error
    except (ValueError, KeyError) as first_error:
        error, mismatch = first_error, None
    # a trainer's checkpoint stores the wrapped network under "layers/<name>"
    with h5py.File(path, "r") as f:
        if set(f) - {"layers", "vars"}:
            # a trainer's checkpoint (it also holds an optimizer and a balancer): the shapes that
            # count are those of the network inside it
            mismatch = None
        candidates = list(f["layers"]) if "layers" in f else []
        for group in candidates:
            with tempfile.TemporaryDirectory() as tmp:
                extracted = os.path.join(tmp, "network.weights.h5")
                with h5py.File(extracted, "w") as out:
                    for key in f[f"layers/{group}"]:
                        f.copy(f[f"layers/{group}/{key}"], out, name=key)
                try:
                    load_weights_file(model, extracted, source=f"{path} (layers/{group})")
                    return
                except WeightsMismatchError as e:
                    mismatch = mismatch or e
                except (ValueError, KeyError):
                    continue
    if mismatch is not None:
        raise mismatch
    raise ValueError(
        f"{path!r} holds neither the weights of {model.name!r} nor a training checkpoint "
        f"wrapping it ({error}); build the single-task network with the recipe's backbone and head"
    ) from error


def load_single_task_networks(
    tasks: Mapping[str, TaskSpec],
    checkpoints: Mapping[str, str],
    **build_kwargs,
) -> dict[str, keras.Model]:
    """Build each task's single-task network and load its checkpoint.

    Args:
        tasks: ``{task: TaskSpec}`` of the soft-sharing model.
        checkpoints: ``{task: path}``: a ``.keras`` file, a network ``.weights.h5``, or a
            ``MultiTaskModel`` checkpoint ``.weights.h5``.
        **build_kwargs: ``backbone``, ``backbone_kwargs``, ``head``, ``head_kwargs``,
            ``image_size`` of the soft-sharing model (passed to ``build_single_task``).

    Example:
        >>> nets = load_single_task_networks(specs, {"semseg": "runs/st_semseg/checkpoints/"
        ...     "last.weights.h5", "depth": "..."}, backbone="resnet18")  # doctest: +SKIP
        >>> init_from_single_task(cross_stitch_network, nets)  # doctest: +SKIP
    """
    missing = [t for t in tasks if t not in checkpoints]
    if missing:
        raise ValueError(
            f"no single-task checkpoint for task(s) {missing}; train the single-task recipes "
            f"first and pass {{task: path}} for every task of {list(tasks)}"
        )
    networks = {}
    for task, spec in tasks.items():
        path = checkpoints[task]
        if not os.path.exists(path):
            raise ValueError(f"single-task checkpoint {path!r} of task {task!r} does not exist")
        if path.endswith(".keras"):
            networks[task] = keras.saving.load_model(path)
            continue
        network = build_single_task(spec, **build_kwargs)
        _load_weights_file(network, path)
        networks[task] = network
    return networks
