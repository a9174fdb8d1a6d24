"""Building blocks shared by the encoder-focused architectures.

* backbones as a sequence of **stages** (:func:`stage_layout`, :func:`split_stages`): the stem
  and the four stages of a ResNet or an HRNet as nested functional models that can be run one
  after the other, so soft-sharing models can mix task columns between stages and branched
  models can give each group of tasks its own copy of a stage;
* independent **copies** of a backbone (:func:`backbone_copies`) and the per-task columns of the
  soft-sharing models, mixed between stages (:func:`task_columns`, :func:`column_pyramids`);
* **replaying** a functional graph on new tensors with a replacement for every layer call
  (:func:`replay`), which ASTMT uses to wrap shared layers with task-specific modules;
* task heads on a pyramid (:func:`pyramid_heads`);
* the ``lr_multiplier`` re-parametrisation of mixing weights (:class:`ScaledWeight`) and the
  common part of the cross-stitch and NDDR units (:class:`TaskMixingUnit`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import keras
import tensorflow as tf

from mtl_keras import backbones
from mtl_keras.architectures.base import ImageNormalization
from mtl_keras.architectures.hard_sharing import HEAD_FEATURES, task_head
from mtl_keras.tasks import TaskSpec

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4")


# --- backbones -----------------------------------------------------------------------------------


def replica_sum(x):
    """Sum of ``x`` over the replicas in sync (the identity outside a multi-replica context).

    A batch statistic that a network loss squares (a Gram matrix, an expert's importance) is
    summed over the replicas before the loss is formed, so that each replica holds the global
    batch's loss; the trainer takes each replica's share of it, and the all-reduce's gradient
    (itself a sum over the replicas) gives each replica's inputs their one-device gradient.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def resolve_backbone(backbone: str | keras.Model, backbone_kwargs: Mapping | None) -> keras.Model:
    """Build a registered backbone by name, or return a built one as is."""
    if isinstance(backbone, str):
        return backbones.get(backbone, **dict(backbone_kwargs or {}))
    if backbone_kwargs:
        raise ValueError(
            f"backbone_kwargs {dict(backbone_kwargs)} were given with an already built backbone "
            f"{backbone.name!r}; pass the backbone's name instead, or build it with those kwargs"
        )
    return backbone


def backbone_copies(
    backbone: str | keras.Model, backbone_kwargs: Mapping | None, n: int
) -> list[keras.Model]:
    """``n`` backbones with their own weights.

    A name is built ``n`` times (independent initialisations, as separately trained single-task
    networks); a built model is cloned and its weights copied into every clone (e.g. ImageNet
    weights loaded with :func:`~mtl_keras.backbones.load_backbone_weights`).
    """
    if isinstance(backbone, str):
        return [resolve_backbone(backbone, backbone_kwargs) for _ in range(n)]
    resolve_backbone(backbone, backbone_kwargs)  # argument checks
    copies = []
    for _ in range(n):
        clone = keras.models.clone_model(backbone)
        clone.set_weights(backbone.get_weights())
        copies.append(clone)
    return copies


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """Where a backbone is cut into stages.

    Attributes:
        names: stage names, a subset of :data:`STAGES` in order.
        outputs: per stage, the names of the layers whose outputs end the stage (several for
            HRNet's parallel branches, highest resolution first).
        pyramid: pyramid level -> (stage index, position in that stage's outputs).
    """

    names: tuple[str, ...]
    outputs: tuple[tuple[str, ...], ...]
    pyramid: dict[str, tuple[int, int]]

    @property
    def single_branch(self) -> bool:
        """True when every stage ends in one tensor (ResNet), False for HRNet."""
        return all(len(o) == 1 for o in self.outputs)


def _producer(tensor) -> str:
    return tensor._keras_history.operation.name


def stage_layout(backbone: keras.Model) -> StageLayout:
    """Cut a backbone into its stem and stages.

    HRNet-style backbones name their stage outputs ``stage{s}_output{i}``
    (:mod:`mtl_keras.backbones.hrnet`); other backbones (ResNet) end a stage at each pyramid level,
    ``P2`` (stage 1) to ``P5`` (stage 4). The stem ends at ``stem_pool`` (ResNet) or
    ``stem_relu2`` (HRNet) when the backbone has such a layer.
    """
    names = {layer.name for layer in backbone.layers}
    levels = sorted(backbone.output)
    stem = next((n for n in ("stem_pool", "stem_relu2") if n in names), None)
    if "stage1_output1" in names:  # HRNet: stage s has s parallel branches
        stages = [
            tuple(f"stage{s}_output{i}" for i in range(1, s + 1) if f"stage{s}_output{i}" in names)
            for s in range(1, 5)
        ]
    else:  # ResNet: one tensor per stage, the pyramid levels in order
        stages = [(_producer(backbone.output[level]),) for level in levels]
    outputs = ([(stem,)] if stem else []) + stages
    stage_names = (STAGES if stem else STAGES[1:])[: len(outputs)]
    pyramid = {}
    for level in levels:
        producer = _producer(backbone.output[level])
        pyramid[level] = next(
            (k, o.index(producer)) for k, o in enumerate(outputs) if producer in o
        )
    return StageLayout(tuple(stage_names), tuple(outputs), pyramid)


def split_stages(backbone: keras.Model, prefix: str = "") -> list[keras.Model]:
    """The stages of ``backbone`` as functional models named ``f"{prefix}{stage}"``.

    Each takes the list of the previous stage's output tensors (the first takes the normalised
    image) and returns the list of its own. The stage models share the backbone's layers, so
    their weights are the backbone's; the stage models, not the backbone, are what an
    architecture nests, and their inner layers keep the backbone's layer names.
    """
    layout = stage_layout(backbone)
    return [stage_model(backbone, k, f"{prefix}{n}") for k, n in enumerate(layout.names)]


def stage_model(backbone: keras.Model, index: int, name: str) -> keras.Model:
    """Stage ``index`` of :func:`stage_layout` as a functional model called ``name``."""
    layout = stage_layout(backbone)
    inputs = (
        [backbone.input]
        if index == 0
        else [backbone.get_layer(n).output for n in layout.outputs[index - 1]]
    )
    outputs = [backbone.get_layer(n).output for n in layout.outputs[index]]
    return keras.Model(inputs, outputs, name=name)


def run_stage(stage: keras.Model, inputs: list) -> list:
    """Call a stage model and always get a list back."""
    out = stage(list(inputs))
    return list(out) if isinstance(out, (list, tuple)) else [out]


def require_single_branch(layout: StageLayout, architecture: str) -> None:
    """Raise a clear error for HRNet-style multi-branch stages where they are not supported."""
    if not layout.single_branch:
        raise ValueError(
            f"{architecture} needs a backbone whose stages end in a single tensor (a ResNet); "
            "this backbone's stages have parallel branches (HRNet). Use backbone='resnet18' or "
            "'resnet50', or an architecture that supports HRNet (hard_sharing, cross_stitch, "
            "nddr, branched)."
        )


def require_tasks(specs: Mapping, architecture: str, minimum: int = 2) -> None:
    if len(specs) < minimum:
        raise ValueError(
            f"{architecture} connects at least {minimum} task networks, got {len(specs)} task(s) "
            f"{list(specs)}; use the single_task architecture for one task"
        )


def check_stages(requested: Sequence[str], layout: StageLayout, argument: str) -> tuple[str, ...]:
    unknown = [s for s in requested if s not in layout.names]
    if unknown:
        raise ValueError(
            f"{argument} names unknown stage(s) {unknown}; this backbone's stages are "
            f"{list(layout.names)}"
        )
    return tuple(requested)


def task_columns(
    specs: Mapping[str, TaskSpec],
    backbone: str | keras.Model,
    backbone_kwargs: Mapping | None,
    image,
    mix_after: Sequence[str],
    mix: Callable[[str, list], list],
    argument: str,
) -> tuple[StageLayout, dict[str, list[list]]]:
    """Run one backbone copy per task stage by stage, mixing the columns after ``mix_after``.

    The soft-sharing networks (cross-stitch, sluice, NDDR-CNN) differ only in ``mix``.

    Args:
        specs: the tasks; one column (nested stage models ``f"{task}_{stage}"``) per task.
        backbone: registered backbone name (built once per task) or a built backbone (cloned
            per task with its weights), see :func:`backbone_copies`.
        backbone_kwargs: arguments of the backbone builder.
        image: the raw image input; it is normalised once (layer ``normalize``) and fed to
            every column.
        mix_after: stages followed by a call of ``mix``.
        mix: ``mix(tag, tensors)`` receives the T tasks' tensors at one stage output (``tag`` is
            the stage name, with ``_branch{i}`` for HRNet branches) and returns the T
            replacements.
        argument: the builder's name for ``mix_after``, used in the error for unknown stages.

    Returns:
        The layout and, per task, the (mixed) output tensors of every stage.
    """
    inputs = ImageNormalization(name="normalize")(image)
    columns = backbone_copies(backbone, backbone_kwargs, len(specs))
    layout = stage_layout(columns[0])
    mix_after = check_stages(mix_after, layout, argument)
    stages = {t: split_stages(c, prefix=f"{t}_") for t, c in zip(specs, columns, strict=True)}
    feats = {t: [inputs] for t in specs}
    per_stage = {t: [] for t in specs}
    for k, stage in enumerate(layout.names):
        feats = {t: run_stage(stages[t][k], feats[t]) for t in specs}
        if stage in mix_after:
            branches = len(layout.outputs[k])
            for pos in range(branches):
                tag = f"{stage}_branch{pos + 1}" if branches > 1 else stage
                mixed = mix(tag, [feats[t][pos] for t in specs])
                for t, y in zip(specs, mixed, strict=True):
                    feats[t][pos] = y
        for t in specs:
            per_stage[t].append(list(feats[t]))
    return layout, per_stage


def column_pyramids(layout: StageLayout, per_stage: Mapping[str, list[list]]) -> dict[str, dict]:
    """``{task: {level: tensor}}`` from each task's per-stage output tensors.

    ``per_stage[task][k]`` lists the outputs of stage ``k`` of the task's column (as
    :func:`task_columns` returns them, or the tree nodes of a branched network); the levels are
    picked by ``layout.pyramid``.
    """
    return {
        t: {level: outs[k][pos] for level, (k, pos) in layout.pyramid.items()}
        for t, outs in per_stage.items()
    }


# --- heads ---------------------------------------------------------------------------------------


def pyramid_heads(
    image,
    pyramids: Mapping[str, Mapping[str, keras.KerasTensor]],
    specs: Mapping[str, TaskSpec],
    head: str,
    head_kwargs: Mapping | None,
    features: Sequence[str] | None = None,
) -> dict[str, keras.KerasTensor]:
    """One head per task on that task's own pyramid, resized to the image: ``{task: output}``."""
    if head not in HEAD_FEATURES:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEAD_FEATURES)}")
    levels = tuple(features or HEAD_FEATURES[head])
    outputs = {}
    for task, spec in specs.items():
        missing = [level for level in levels if level not in pyramids[task]]
        if missing:
            raise ValueError(
                f"the {task!r} features have no level(s) {missing}; available: "
                f"{sorted(pyramids[task])}"
            )
        feats = [pyramids[task][level] for level in levels]
        outputs[task] = task_head(image, feats, spec, head, head_kwargs, task)
    return outputs


# --- graph replay --------------------------------------------------------------------------------


def replay(
    model: keras.Model,
    inputs,
    call: Callable[[keras.Layer, tuple, dict], object] | None = None,
):
    """Re-run the layers of a functional ``model`` on new (symbolic) ``inputs``.

    The layers themselves are called again, so their weights are shared with ``model``; nothing
    is cloned. ``call(layer, args, kwargs)`` replaces each layer call (default
    ``layer(*args, **kwargs)``; the tensors in ``args`` belong to the new graph), so a caller can
    add layers around any layer of the model.

    Returns:
        The model's output structure computed on ``inputs``.
    """
    call = call or (lambda layer, args, kwargs: layer(*args, **kwargs))
    # Keras's own graph walk (the one clone_model uses) with our call function
    return model._run_through_graph(
        inputs, operation_fn=lambda op: op, call_fn=lambda op, *a, **k: call(op, a, k)
    )


def layer_input(tensor):
    """The input tensor of the layer that produced ``tensor`` (one input, first node)."""
    history = tensor._keras_history
    node = history.operation._inbound_nodes[history.node_index]
    return node.input_tensors[0]


# --- learning-rate multipliers -------------------------------------------------------------------


class ScaledWeight:
    """Re-parametrise a weight ``w = s * v`` so that SGD moves ``w`` ``s**2`` times faster.

    With plain or momentum SGD, the update of ``v`` is ``-lr * s * dL/dw``, hence
    ``dw = -lr * s**2 * dL/dw``: a learning rate ``lr_multiplier = s**2`` times larger for
    ``w`` alone, without optimizer support for per-variable learning rates. This is how the
    survey's "100x learning rate on the cross-stitch / NDDR units" is reproduced
    (``lr_multiplier=100``). Two differences to PyTorch parameter groups: Keras's decoupled
    weight decay shrinks ``w`` at the base rate, and with Adam (invariant to gradient scale) the
    effective multiplier is ``s``, not ``s**2``.
    """

    def __init__(self, lr_multiplier: float):
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be positive, got {lr_multiplier!r}")
        self.scale = math.sqrt(lr_multiplier)

    def stored(self, value):
        """The stored variable value ``v = w / s`` for an initial ``w``."""
        return value / self.scale

    def add_to(self, layer: keras.Layer, init, name: str):
        """Add to ``layer`` the variable ``name`` of a weight whose initial value is ``init``.

        The variable has ``init``'s shape and stores :meth:`stored` ``(init)``; ``layer`` reads
        the effective weight as ``self(variable)``.
        """
        return layer.add_weight(
            shape=init.shape,
            initializer=keras.initializers.Constant(self.stored(init)),
            name=name,
        )

    def __call__(self, variable):
        """The effective weight ``w = s * v``."""
        return variable * self.scale


class TaskMixingUnit(keras.layers.Layer):
    """Base of the layers that mix T same-shaped task features into T outputs (cross-stitch, NDDR).

    A subclass creates its mixing weight in ``build`` (:meth:`task_channels` checks the inputs,
    ``self._scaled.add_to(self, init, name)`` adds the weight, see :class:`ScaledWeight`) and
    computes the T outputs in ``call``; inputs and outputs are lists of T tensors ``(B, H, W, C)``.

    Args:
        alpha: initial weight of a task's own features.
        beta: initial weight of every other task's features.
        lr_multiplier: learning-rate multiplier of the mixing weight under SGD
            (re-parametrisation).
    """

    def __init__(self, alpha: float = 0.9, beta: float = 0.1, lr_multiplier: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta, self.lr_multiplier = float(alpha), float(beta), float(lr_multiplier)
        self._scaled = ScaledWeight(self.lr_multiplier)

    def task_channels(self, input_shape, unit: str) -> tuple[int, int]:
        """``(T, C)``: the number of inputs and their common channel count.

        ``unit`` names the unit in the error message (``"cross-stitch"``).

        Raises:
            ValueError: the inputs differ in channels.
        """
        shapes = list(input_shape)
        channels = {tuple(s)[-1] for s in shapes}
        if len(channels) != 1:
            raise ValueError(f"{unit} inputs must have the same channels, got shapes {shapes}")
        return len(shapes), channels.pop()

    def compute_output_shape(self, input_shape):
        return list(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "lr_multiplier": self.lr_multiplier,
        }
