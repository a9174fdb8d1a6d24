"""MLoRE: multi-task dense prediction via a mixture of low-rank experts (Yang et al., CVPR 2024).

Yang, Jiang, Zhang, Zhu, Yang and Xu, "Multi-Task Dense Prediction via Mixture of Low-Rank
Experts", CVPR 2024. On a shared ViT encoder, at each of four encoder layers (here: pyramid
levels, resized to one grid), two MLoRE modules in a row turn the encoder features into every
task's features. One MLoRE module, for task ``t`` on features ``x``:

    y = conv1x1_t(x)
    out = BN_t( BN'_t(sum_e g_t,e * expert_e(y)) + m_t * specific_t(y) + generic(stopgrad(y)) )
    out = conv1x1'_t(GELU(out))

* ``expert_e`` are **low-rank convolutions shared by all tasks**: a 3x3 convolution to rank
  ``r_e`` then a 1x1 convolution back (linear, so the experts can be re-parameterised into one
  convolution after training); ranks 16..240 in steps of 16 (15 experts) on NYUD-v2 ViT-L;
* ``specific_t`` is the task's own low-rank convolution (rank 16 on NYUD-v2 ViT-L);
* ``generic`` is the **shared generic path**, a full 3x3 convolution that every task uses; the
  paper stops its gradient into ``y`` so that the shared path is learned without pulling the
  task features together;
* the **router** of each task gives ``g_t`` (top-k of the experts: 9 of 15, softmax over the
  kept ones) and the weight ``m_t`` of the specific path, per image.

The four levels' task features are mixed per task by a softmax-over-levels mask predicted from
their concatenation (1x1 conv + BN + GELU + 3x3 conv), upsampled 4x and fed to a head (3x3
conv + BN + GELU, 1x1 conv).

Paper settings (released configurations): ViT-L/16, 448x576 (NYUD-v2) / 512x512 (PASCAL),
decoder width 768 / 452 (ViT-B on PASCAL: 640), ranks 16..240 step 16 (NYUD) / 16..128 step 8
(PASCAL), specific rank 16 / 72 (ViT-B: 64), top-9, Adam lr 1e-5 / 2e-5, weight decay 1e-6,
batch 2, 40,000 iterations, poly schedule, gradient clipping at norm 10, the survey's loss
weights plus a load-balancing loss (weight 5e-4 on NYUD-v2 ViT-L, 3e-4 on PASCAL ViT-L, 1e-4
on PASCAL ViT-B and ViT-S).

**Load-balancing loss** (``head_kwargs["balance_weight"]``, default 0: none; the recipes set
the released weights). As the released code computes it (``losses/loss_schemes.py``, from the
``route_1_prob`` / ``route_2_prob`` gates its ``MOEBlock`` returns): for each of the 8 MLoRE
modules ``m``, the gates ``g_t,e(x)`` of *all* tasks (after top-k, so zero outside it; the
released gates also carry the noise of its noisy gating, absent here) over the ``N = T * B``
(task, image) pairs of the batch give each expert's importance

    I_m,e = (1 / N) * sum_t sum_x g_t,e(x)

and the loss is the squared coefficient of variation of the importances over the ``E`` experts,
summed over the modules (the tasks are pooled inside a module, not summed):

    L_balance = balance_weight * sum_m ( std_e(I_m,e) / mean_e(I_m,e) )^2

with the unbiased standard deviation (``torch.std``: divisor ``E - 1``; the loss is 0 with one
expert). It is added with ``add_loss`` by one :class:`LoadBalance` layer (``"mlore_balance"``),
in training calls only, and the trainer adds it outside the balancer like every network loss
(:mod:`mtl_keras.training.objective`). The layer is an identity on each task's mixed features
with one node per task, so no task's graph reads another task's routers: they stay
task-specific variables, as without the loss.

Distribution: the statistic is not a mean of per-image terms, so each replica all-reduces (sum)
the per-expert gate sums and the pair counts before forming it, and every replica's
``add_loss`` value is the global batch's loss. The trainer takes a replica's share of a network
loss (divided by the replica count; the shares sum to the one-device loss) and sums the replicas'
gradients; the gradient of the all-reduce is itself an all-reduced sum, so the summed gradient is
the one-device gradient: two replicas take the same step as one device. (``MirroredStrategy``
runs the replicas in threads: the layer keeps its pending gates and its loss per thread, so each
replica reads its own loss, whose gradient its tape recorded.) (The released code, run
with PyTorch DDP on 2 GPUs of 2 images, computes the statistic per GPU on its own 2 images; here
it is always the global batch's, which is the released statistic at the recipes' batch 2 on one
device.)

Differences: the router here is global average pooling and a two-layer MLP (the paper's router
is a spatial-attention pooling), without the noisy top-k gating of training (so two replicas
compute the same step as one device).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

import keras
import tensorflow as tf
from keras import ops

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures import _transformer_blocks as tblocks
from mtl_keras.architectures._blocks import replica_sum
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "channels": None,  # 768 on NYUD ViT-L; None: the coarsest level's channels * 3/4
    "ranks": None,  # None: 15 experts of ranks channels/48 * (1..15) (NYUD's 16..240 at 768)
    "specific_rank": None,  # None: channels / 48 (16 at 768)
    "top_k": 9,
    "levels": ("P2", "P3", "P4", "P5"),
    "grid_level": "P4",  # the levels are resized to this level's grid (the ViT's stride 16)
    "sync_batchnorm": True,
    "balance_weight": 0.0,  # the load-balancing loss (0: none; released: 5e-4 NYUD, 3e-4 PASCAL)
}


@keras.saving.register_keras_serializable(package="mtl_keras")
class ExpertRouter(keras.layers.Layer):
    """A task's router: per image, top-k softmax weights over the experts and a path weight.

    Global average pooling, ``Dense(hidden, gelu)``, ``Dense(num_experts + 1)``; the experts'
    logits outside the top ``k`` are dropped (-inf) before the softmax (the paper's
    "pre-softmax" variant); the last output weights the task-specific path as it is, unbounded:
    the released code multiplies that path by the router's last channel directly.

    Returns:
        ``(B, 1, 1, num_experts + 1)``: the expert weights (summing to 1) and the path weight.
    """

    def __init__(self, num_experts: int, top_k: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.num_experts, self.top_k, self.hidden = int(num_experts), int(top_k), int(hidden)
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in 1..{num_experts} (the experts), got {top_k}")
        self.fc1 = keras.layers.Dense(self.hidden, activation="gelu", name="fc1")
        self.fc2 = keras.layers.Dense(self.num_experts + 1, name="fc2")

    def build(self, input_shape):
        self.fc1.build((None, input_shape[-1]))
        self.fc2.build((None, self.hidden))
        self.built = True

    def call(self, x):
        logits = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
        experts, path = logits[:, : self.num_experts], logits[:, self.num_experts :]
        kth = ops.top_k(experts, self.top_k, sorted=True)[0][:, -1:]
        experts = ops.where(experts >= kth, experts, ops.full_like(experts, -1e4))
        weights = ops.concatenate([ops.softmax(experts, axis=-1), path], axis=-1)
        return ops.reshape(weights, (-1, 1, 1, self.num_experts + 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, self.num_experts + 1)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "hidden": self.hidden,
        }


@keras.saving.register_keras_serializable(package="mtl_keras")
class WeightedSum(keras.layers.Layer):
    """``sum_i w[..., i] * x_i`` for maps ``x_i`` and per-image (or per-pixel) weights ``w``.

    Takes ``[w, x_0, ..., x_{n-1}]`` with ``w`` of shape ``(B, 1 or h, 1 or w, >= n)``; weight
    ``offset + i`` scales ``x_i``.
    """

    def __init__(self, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.offset = int(offset)

    def call(self, inputs):
        weights, *maps = inputs
        total = 0
        for i, x in enumerate(maps):
            w = weights[..., self.offset + i : self.offset + i + 1]
            total = total + ops.cast(w, x.dtype) * x
        return total

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="mtl_keras")
class StopGradient(keras.layers.Layer):
    """Identity forward, no gradient backward (MLoRE's generic path input)."""

    def call(self, x):
        return ops.stop_gradient(x)


class _PerThread:
    """Attributes of its ``local`` seen by one thread each (a fresh, empty one when copied)."""

    def __init__(self):
        self.local = threading.local()

    def __deepcopy__(self, memo):
        return type(self)()


class _PerThreadList(_PerThread):
    """A list with one content per thread: a layer's ``_losses`` under ``tf.distribute``.

    ``MirroredStrategy`` runs each replica's step in a thread of its own, interleaved where
    replicas synchronise (batch norms, all-reduces). Keras keeps a layer's ``add_loss`` values in
    one list that every call begins by clearing, so a replica would also read (or clear) another
    replica's loss, one its own tape did not record. Keras only extends, copies and clears the
    list; each thread here sees its own.
    """

    def _items(self) -> list:
        if not hasattr(self.local, "items"):
            self.local.items = []
        return self.local.items

    def extend(self, values):
        self._items().extend(values)

    def clear(self):
        self._items().clear()

    def __getitem__(self, index):
        return self._items()[index]

    def __iter__(self):
        return iter(self._items())

    def __len__(self):
        return len(self._items())


@keras.saving.register_keras_serializable(package="mtl_keras")
class LoadBalance(keras.layers.Layer):
    """MLoRE's load-balancing loss (module docstring), one layer shared by the task paths.

    Called once per task and forward pass with ``[x, *gates]``: ``x`` (the task's features) is
    returned unchanged, ``gates`` are the task's router outputs ``(B, 1, 1, E + 1)`` of every
    MLoRE module, in the same module order for every task (the last channel, the specific
    path's weight, is not a gate). A call holds its task's gates; in training, the call that
    completes the ``tasks`` of a pass adds ``weight * sum_m CV^2(I_m)`` with ``add_loss``,
    ``I_m`` the experts' mean gates over all tasks and images of the global batch (all-reduced
    over replicas). One node per task keeps every task's routers out of the other tasks' graphs,
    so the routers stay task-specific variables (:func:`~mtl_keras.architectures.sharing_of`).
    The pending gates and the loss are kept per thread (each replica's own) and per graph.
    """

    def __init__(self, weight: float, tasks: int, **kwargs):
        super().__init__(**kwargs)
        self.weight, self.tasks = float(weight), int(tasks)
        if self.tasks < 1:
            raise ValueError(f"LoadBalance needs at least one task, got {tasks}")
        self._losses = _PerThreadList()
        self._pending = _PerThread()  # .local.graph, .local.gates: this thread's, this pass's

    def _collect(self, gates) -> list | None:
        """Hold one task's gates; the ``tasks`` tasks' gates once the pass has them all."""
        pending, graph = self._pending.local, tf.compat.v1.get_default_graph()
        if getattr(pending, "graph", None) is not graph:
            pending.graph, pending.gates = graph, []
        pending.gates.append(list(gates))
        if len(pending.gates) < self.tasks:
            return None
        done, pending.gates = pending.gates, []
        return done

    @staticmethod
    def penalty(per_task) -> tf.Tensor:
        """``sum_m CV^2(I_m)`` of the global batch (float32, unweighted); ``per_task[t][m]``
        are task ``t``'s gates of module ``m``."""
        experts = int(per_task[0][0].shape[-1]) - 1
        if experts < 2:
            return ops.zeros((), "float32")
        rows = []  # per module: the gates' sums over (task, image) pairs, and the pair count
        for m in range(len(per_task[0])):
            g = [
                ops.reshape(ops.cast(gates[m], "float32"), (-1, experts + 1)) for gates in per_task
            ]
            g = ops.concatenate(g, axis=0)[:, :experts]
            count = ops.reshape(ops.cast(ops.shape(g)[0], "float32"), (1,))
            rows.append(ops.concatenate([ops.sum(g, axis=0), count], axis=0))
        totals = replica_sum(ops.stack(rows))  # (modules, E + 1), of the global batch
        importance = ops.divide_no_nan(totals[:, :experts], totals[:, experts:])
        mean = ops.mean(importance, axis=1)
        variance = ops.sum(ops.square(importance - mean[:, None]), axis=1) / (experts - 1)
        return ops.sum(ops.divide_no_nan(variance, ops.square(mean)))

    def call(self, inputs, training=None):
        x, *gates = inputs
        if training and self.weight:
            per_task = self._collect(gates)
            if per_task is not None:
                self.add_loss(self.weight * self.penalty(per_task))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "tasks": self.tasks}


def _low_rank(name: str, channels: int, rank: int) -> list:
    return [
        keras.layers.Conv2D(rank, 3, padding="same", name=f"{name}_down"),
        keras.layers.Conv2D(channels, 1, name=f"{name}_up"),
    ]


class MLoReModule:
    """One MLoRE module's shared layers (experts, generic path); tasks get their own on call."""

    def __init__(self, name: str, channels: int, ranks, specific_rank, top_k, sync_batchnorm):
        self.name, self.channels = name, channels
        self.ranks, self.specific_rank, self.top_k = list(ranks), specific_rank, top_k
        self.sync = sync_batchnorm
        self.experts = [
            _low_rank(f"{name}_expert{e}", channels, r) for e, r in enumerate(self.ranks)
        ]
        self.generic = keras.layers.Conv2D(channels, 3, padding="same", name=f"{name}_generic")
        self.gates = {}  # each task's router output (for the load-balancing loss)

    def _bn(self, x, name):
        return keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, synchronized=self.sync, name=name
        )(x)

    def __call__(self, x, task: str):
        n, c = f"{task}_{self.name}", self.channels
        y = keras.layers.Conv2D(c, 1, name=f"{n}_in")(x)
        weights = ExpertRouter(len(self.ranks), self.top_k, max(c // 4, 1), name=f"{n}_router")(y)
        self.gates[task] = weights
        outs = [up(down(y)) for down, up in self.experts]
        mixture = self._bn(WeightedSum(name=f"{n}_mixture")([weights, *outs]), f"{n}_mixture_bn")
        down, up = _low_rank(f"{n}_specific", c, self.specific_rank)
        specific = WeightedSum(offset=len(self.ranks), name=f"{n}_specific_weighted")(
            [weights, up(down(y))]
        )
        generic = self.generic(StopGradient(name=f"{n}_detach")(y))
        out = keras.layers.Add(name=f"{n}_sum")([mixture, specific, generic])
        out = keras.layers.Activation("gelu", name=f"{n}_gelu")(self._bn(out, f"{n}_bn"))
        return keras.layers.Conv2D(c, 1, name=f"{n}_out")(out)


def build_mlore(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "mlore",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    name: str = "mlore",
) -> keras.Model:
    """MLoRE: per level two mixture-of-low-rank-experts modules, level mixing, heads.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name (``"keras_hub.ViTBackbone"``, ``"preset:<dir>"``,
            ``"resnet50"``, ...) or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: ``"mlore"`` (or ``"hrnet"``, the recipes' default).
        head_kwargs: decoder options: ``channels``, ``ranks``, ``specific_rank`` (None: scaled
            from the encoder as the NYUD-v2 ViT-L configuration), ``top_k`` (9), ``levels``
            (``P2..P5``), ``grid_level`` (``"P4"``), ``sync_batchnorm`` (True),
            ``balance_weight`` (0.0: the weight of the load-balancing loss; 0 adds no layer).
        image_size: ``(H, W)`` of the input; required.
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}``.

    Example:
        >>> model = build_mlore(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head_kwargs={"channels": 16, "top_k": 3},
        ...     image_size=(32, 32), task_options={"semseg": {"num_classes": 5}})
        >>> sorted(model.output)
        ['depth', 'semseg']
    """
    specs = resolve(tasks, task_options)
    opts = tblocks.transformer_options("mlore", head, head_kwargs, DEFAULTS)
    sync = bool(opts["sync_batchnorm"])
    names = list(opts["levels"])
    if opts["grid_level"] not in names:
        raise ValueError(f"mlore: grid_level {opts['grid_level']!r} must be one of {names}")
    image = image_input(image_size)
    levels = tblocks.encode_levels("mlore", image, backbone, backbone_kwargs, names)
    c = tblocks.scaled(opts["channels"], levels[-1].shape[-1], 0.75, minimum=4)
    unit = max(c // 48, 1)
    ranks = list(opts["ranks"] or [unit * (i + 1) for i in range(15)])
    specific_rank = tblocks.scaled(opts["specific_rank"], c, 1 / 48)
    top_k = min(int(opts["top_k"]), len(ranks))
    grid = levels[names.index(opts["grid_level"])]
    balance = float(opts["balance_weight"])
    if balance < 0:
        raise ValueError(f"mlore: balance_weight must be >= 0, got {balance}")

    per_task = {t: [] for t in specs}
    modules = []
    for k, x in enumerate(levels):
        x = ResizeLike(name=f"level{k}_to_grid")([x, grid])
        x = keras.layers.Conv2D(c, 1, name=f"level{k}_fuse")(x)
        first = MLoReModule(f"level{k}_mlore1", c, ranks, specific_rank, top_k, sync)
        second = MLoReModule(f"level{k}_mlore2", c, ranks, specific_rank, top_k, sync)
        for t in specs:
            per_task[t].append(second(first(x, t), t))
        modules += [first, second]
    # one layer, one node per task (on the task's own path): the loss of every module's gates
    balance_layer = LoadBalance(balance, len(specs), name="mlore_balance") if balance else None

    outputs = {}
    for t, spec in specs.items():
        feats = per_task[t]
        cat = keras.layers.Concatenate(name=f"{t}_levels")(feats) if len(feats) > 1 else feats[0]
        mask = tblocks.conv_bn_act(cat, c, 1, f"{t}_level_mask1", act="gelu", sync_batchnorm=sync)
        mask = keras.layers.Conv2D(len(feats), 3, padding="same", name=f"{t}_level_mask2")(mask)
        mask = keras.layers.Softmax(axis=-1, name=f"{t}_level_softmax")(mask)
        x = WeightedSum(name=f"{t}_level_mix")([mask, *feats])
        if balance_layer is not None:
            x = balance_layer([x, *(m.gates[t] for m in modules)])
        x = keras.layers.UpSampling2D(4, interpolation="bilinear", name=f"{t}_up")(x)
        x = tblocks.conv_bn_act(x, c, 3, f"{t}_head", act="gelu", sync_batchnorm=sync)
        x = keras.layers.Conv2D(spec.channels, 1, name=f"{t}_head_out")(x)
        outputs[t] = blocks.to_image(x, image, t)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
