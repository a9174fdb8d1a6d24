"""Branched multi-task networks (Vandenhende et al., "Branched Multi-Task Networks: Deciding What
Layers to Share", BMVC 2020).

A tree over the backbone's stages: at every stage the tasks are partitioned into groups, each group
runs its own copy of the stage on its parent group's features, and groups only split going deeper
(each group at stage ``s + 1`` lies inside one group at stage ``s``). One group of all tasks at
every stage is hard sharing; one group per task everywhere is independent single-task networks.
:mod:`mtl_keras.architectures.branching` chooses the tree from the task affinities of trained
single-task networks under a parameter budget.

The tree is ``branches[s]`` = the grouping at stage ``s + 1`` (stages 1..4; the stem follows
stage 1), e.g. for three tasks::

    [[["semseg", "depth", "normals"]],            # stage 1: shared
     [["semseg", "depth", "normals"]],            # stage 2: shared
     [["semseg", "depth"], ["normals"]],          # stage 3: normals branches off
     [["semseg"], ["depth"], ["normals"]]]        # stage 4: one branch per task

The outputs of stages shared by all tasks are the shared representation (marked with
:class:`~mtl_keras.architectures.base.SharedRepresentation`).

Layer names: every tree node is a nested stage model ``f"{stage}_{'-'.join(group)}"``
(``stage3_semseg-depth``) whose layers keep the backbone's names; heads are prefixed by the task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras

from mtl_keras.architectures._blocks import (
    backbone_copies,
    column_pyramids,
    pyramid_heads,
    run_stage,
    stage_layout,
    stage_model,
)
from mtl_keras.architectures.base import ImageNormalization, SharedRepresentation, mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.tasks import TaskSpec, resolve

Tree = tuple[tuple[tuple[str, ...], ...], ...]


def default_tree(tasks: Sequence[str], num_stages: int = 4, shared: int = 2) -> Tree:
    """Share the first ``shared`` stages, then one branch per task."""
    tasks = tuple(tasks)
    return tuple((tasks,) if s < shared else tuple((t,) for t in tasks) for s in range(num_stages))


def normalize_tree(branches: Sequence[Sequence[Sequence[str]]], tasks: Sequence[str]) -> Tree:
    """Validate a tree and order it canonically (tasks and groups in the order of ``tasks``).

    Raises:
        ValueError: a stage's groups do not partition the tasks, or a group at a deeper stage
            spans two groups of the stage above.
    """
    order = {t: i for i, t in enumerate(tasks)}
    tree = []
    for s, groups in enumerate(branches, start=1):
        flat = [t for g in groups for t in g]
        if sorted(flat, key=lambda t: order.get(t, -1)) != list(tasks) or not all(groups):
            raise ValueError(
                f"stage {s} of the tree must partition the tasks {list(tasks)} into non-empty "
                f"groups, each task in exactly one group; got {[list(g) for g in groups]}"
            )
        canon = sorted((tuple(sorted(g, key=order.get)) for g in groups), key=lambda g: order[g[0]])
        if tree:
            parents = tree[-1]
            for g in canon:
                if not any(set(g) <= set(p) for p in parents):
                    raise ValueError(
                        f"stage {s} group {list(g)} spans several groups of stage {s - 1} "
                        f"{[list(p) for p in parents]}; deeper stages may only split groups"
                    )
        tree.append(tuple(canon))
    return tuple(tree)


def build_branched(
    tasks: Iterable[str | TaskSpec],
    *,
    branches: Sequence[Sequence[Sequence[str]]] | None = None,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "deeplab",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    features: Sequence[str] | None = None,
    name: str = "branched",
) -> keras.Model:
    """A branched network following ``branches``; outputs ``{task: (B, H, W, channels)}``.

    Args:
        tasks: task names or TaskSpecs.
        branches: the grouping of the task names at stages 1..4 (see the module docstring); a
            fifth leading entry sets the stem's grouping. Default :func:`default_tree` (shared
            stem and stages 1-2, task-specific stages 3-4).
        backbone: registered backbone name or a built backbone (cloned per tree node).
        backbone_kwargs: arguments of the backbone builder.
        head: ``"deeplab"``, ``"hrnet"`` or ``"conv"``.
        head_kwargs: arguments of the head builder.
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories.
        features: pyramid levels given to the heads (default depends on the head).
        name: model name.

    Example:
        >>> tree = [[["semseg", "depth"]]] * 3 + [[["semseg"], ["depth"]]]
        >>> model = build_branched(["semseg", "depth"], branches=tree, backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head="conv", image_size=(32, 32))
        >>> sorted(layer.name for layer in model.layers if layer.name.startswith("stage4"))
        ['stage4_depth', 'stage4_semseg']
    """
    specs = resolve(tasks, task_options)
    names = tuple(specs)
    tree = normalize_tree(branches if branches is not None else default_tree(names), names)
    if not tree:
        raise ValueError("branches must give the grouping of at least one stage")
    max_groups = max(len(groups) for groups in tree)
    copies = backbone_copies(backbone, backbone_kwargs, max_groups)
    layout = stage_layout(copies[0])
    n_stages = len(layout.names)
    if len(tree) == n_stages - 1 and layout.names[0] == "stem":
        tree = (tree[0], *tree)  # the stem follows stage 1
    if len(tree) != n_stages:
        raise ValueError(
            f"branches has {len(tree)} stage groupings; this backbone has stages "
            f"{list(layout.names)}: give one grouping per stage after the stem ({n_stages - 1})"
        )
    deepest_shared = max((k for k, groups in enumerate(tree) if len(groups) == 1), default=-1)

    image = image_input(image_size)
    x = ImageNormalization(name="normalize")(image)
    node_out: dict[tuple[str, ...], list] = {names: [x]}  # group -> its latest stage outputs
    per_task: dict[str, list[list]] = {t: [] for t in names}
    for k, (stage, groups) in enumerate(zip(layout.names, tree, strict=True)):
        outs = {}
        for g, group in enumerate(groups):
            parent = next(p for p in node_out if set(group) <= set(p))
            model = stage_model(copies[g], k, f"{stage}_{'-'.join(group)}")
            outs[group] = run_stage(model, node_out[parent])
        if len(groups) == 1 and k <= deepest_shared:
            group = groups[0]
            tags = [
                f"shared_{stage}" + (f"_branch{i + 1}" if len(outs[group]) > 1 else "")
                for i in range(len(outs[group]))
            ]
            marked = [
                SharedRepresentation(name=n)(t) for n, t in zip(tags, outs[group], strict=True)
            ]
            for t in names:
                per_task[t].append(marked)
            if k == deepest_shared:  # the boundary: the branches read the marked tensors
                outs[group] = marked
        else:
            for group, tensors in outs.items():
                for t in group:
                    per_task[t].append(tensors)
        node_out = outs
    pyramids = column_pyramids(layout, per_task)
    outputs = pyramid_heads(image, pyramids, specs, head, head_kwargs, features)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
