"""InvPT: the inverted pyramid multi-task transformer (Ye & Xu, ECCV 2022).

Ye and Xu, "Inverted Pyramid Multi-task Transformer for Dense Scene Understanding", ECCV 2022.
On a shared ViT encoder:

1. *preliminary decoder*: per task, two 3x3 conv + BN + ReLU blocks on the coarsest encoder
   features (the last ViT layer resized to half its patch grid, stride 32) give task features
   (``embed_dim`` = 512) and a 1x1 conv a *preliminary prediction*, output as
   ``"{task}/preliminary"`` and supervised; features and prediction are concatenated and
   projected to ``embed_dim + 64`` channels;
2. *inverted pyramid*: three UP-Transformer stages at strides 32, 16 and 8 with widths
   ``D, D/2, D/4`` (``D = embed_dim + 64``). Between stages every task's map is upsampled 2x
   (bilinear, then 3x3 conv + BN + ReLU) and the encoder's features at that stride are added
   (*multi-scale encoder feature fusion*). Each stage's block is a *multi-task* self-attention:
   the tokens of **all tasks** attend to each other (queries from a depth-wise 3x3/2 conv + BN,
   keys and values average-pooled by 2, 4, 8, 2 heads), and the previous stage's attention
   scores, upsampled over the query grid, are fused with the current ones by a 1x1 mixing of
   heads (*cross-scale attention message passing*). The attention output is upsampled back to
   the stage's grid; a pre-norm MLP (ratio 4) follows;
3. *multi-scale fusion*: every stage's task maps (layer-normalised, projected back to ``D``) are
   resized to stride 4 and summed; per task a 3x3 conv + BN + ReLU and a 1x1 conv predict.

The paper's encoder is ViT-L/16 (ImageNet-22k), 448x576 (NYUD-v2) and 512x512 (PASCAL-Context),
Adam lr 2e-5, weight decay 1e-6, batch 2, 40,000 iterations, poly schedule; the released
configuration's loss weights are those of the survey. Here the encoder levels are the pyramid's
``P3``, ``P4`` and ``P5`` (the ViT adapter's layers 2, 3 and 4 of 4); the released code reads
layers 1 and 2 at the 16 and 8 strides and resizes layer 4 to stride 32.
Stochastic depth (0.15) is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras
import tensorflow as tf
from keras import ops

from mtl_keras.architectures import _decoder_blocks as blocks
from mtl_keras.architectures import _transformer_blocks as tblocks
from mtl_keras.architectures.base import mark_task_outputs
from mtl_keras.architectures.hard_sharing import image_input
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

#: decoder options (``head_kwargs``) and their defaults
DEFAULTS = {
    "embed_dim": None,  # 512 in the paper; None: half the coarsest level's channels
    "prediction_channels": 64,  # the paper's PRED_OUT_NUM_CONSTANT
    "levels": ("P3", "P4", "P5"),  # encoder levels at strides 8, 16, 32 (finest first)
    "num_heads": 2,
    "kv_strides": (2, 4, 8),
    "mlp_ratio": 4.0,
    "sync_batchnorm": True,
}


@keras.saving.register_keras_serializable(package="mtl_keras")
class MultiTaskAttentionBlock(keras.layers.Layer):
    """One UP-Transformer block over the stacked task maps ``(B, T, h, w, C)``.

    All ``T * h' * w'`` queries (a depth-wise 3x3/2 conv + BN of every task's map) attend to all
    ``T * h'' * w''`` keys and values (average pools by ``kv_stride``); with the previous stage's
    scores ``(B, heads, T * q_prev, T * k)``, those are resized over the query grid and mixed
    with the current scores by a learned ``2 * heads -> heads`` map. The attention output is
    upsampled to ``(h, w)`` and added; a pre-norm MLP follows.

    Returns:
        ``(maps, scores)``: the updated ``(B, T, h, w, C)`` and the pre-softmax scores.
    """

    def __init__(
        self,
        num_tasks: int,
        grid: Sequence[int],
        dim: int,
        num_heads: int = 2,
        kv_stride: int = 2,
        mlp_ratio: float = 4.0,
        message_grid: Sequence[int] | None = None,
        sync_batchnorm: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks, self.grid, self.dim = int(num_tasks), tuple(grid), int(dim)
        self.num_heads, self.kv_stride, self.mlp_ratio = int(num_heads), int(kv_stride), mlp_ratio
        self.message_grid = tuple(message_grid) if message_grid else None
        self.sync_batchnorm = sync_batchnorm
        if self.dim % self.num_heads:
            raise ValueError(f"width {dim} does not split into {num_heads} attention heads")
        h, w = self.grid
        self.q_grid = (-(-h // 2), -(-w // 2))
        self.kv_grid = (-(-h // self.kv_stride), -(-w // self.kv_stride))
        p = {"dtype": self.dtype_policy}
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1", **p)
        self.q_conv = keras.layers.DepthwiseConv2D(
            3, strides=2, padding="same", use_bias=False, name="q_conv", **p
        )
        self.q_bn = keras.layers.BatchNormalization(
            epsilon=1e-5, momentum=0.9, synchronized=sync_batchnorm, name="q_bn", **p
        )
        self.kv_pool = keras.layers.AveragePooling2D(
            self.kv_stride, padding="same", name="kv_pool", **p
        )
        self.q_proj = keras.layers.Dense(self.dim, name="q_proj", **p)
        self.k_proj = keras.layers.Dense(self.dim, name="k_proj", **p)
        self.v_proj = keras.layers.Dense(self.dim, name="v_proj", **p)
        self.out_proj = keras.layers.Dense(self.dim, name="out_proj", **p)
        self.fuse_scores = (
            keras.layers.Dense(self.num_heads, name="fuse_scores", **p)
            if self.message_grid
            else None
        )
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2", **p)
        hidden = int(self.dim * mlp_ratio)
        self.mlp1 = keras.layers.Dense(hidden, activation="gelu", name="mlp1", **p)
        self.mlp2 = keras.layers.Dense(self.dim, name="mlp2", **p)

    def build(self, input_shape):
        (h, w), c = self.grid, self.dim
        per_task = (None, h, w, c)
        self.norm1.build(per_task)
        self.q_conv.build(per_task)
        self.q_bn.build((None, *self.q_grid, c))
        for dense in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.mlp1):
            dense.build((None, None, c))
        self.mlp2.build((None, None, int(c * self.mlp_ratio)))
        self.norm2.build(per_task)
        if self.fuse_scores is not None:
            self.fuse_scores.build((None, None, None, 2 * self.num_heads))
        self.built = True

    def _heads(self, x):  # (B, L, C) -> (B, heads, L, C / heads)
        b = ops.shape(x)[0]
        x = ops.reshape(x, (b, -1, self.num_heads, self.dim // self.num_heads))
        return ops.transpose(x, (0, 2, 1, 3))

    def _message(self, scores):
        """Previous scores ``(B, n, T*q_prev, K)`` resized over the query grid to ``q_grid``."""
        b, n, k = ops.shape(scores)[0], self.num_heads, ops.shape(scores)[-1]
        hp, wp = self.message_grid
        x = ops.reshape(scores, (b, n, self.num_tasks, hp, wp, k))
        x = ops.reshape(ops.transpose(x, (0, 1, 2, 5, 3, 4)), (-1, hp, wp, 1))
        x = tf.image.resize(x, self.q_grid, method="bilinear")
        x = ops.reshape(ops.cast(x, scores.dtype), (b, n, self.num_tasks, k, *self.q_grid))
        x = ops.transpose(x, (0, 1, 2, 4, 5, 3))
        return ops.reshape(x, (b, n, -1, k))

    def call(self, inputs, training=None):
        maps, previous = (inputs, None) if self.fuse_scores is None else inputs
        t, (h, w), c = self.num_tasks, self.grid, self.dim
        b = ops.shape(maps)[0]
        flat = ops.reshape(maps, (-1, h, w, c))  # (B*T, h, w, C)
        x = self.norm1(flat)
        q = self.q_bn(self.q_conv(x), training=training)
        kv = self.kv_pool(x)
        q = self.q_proj(ops.reshape(q, (b, -1, c)))  # all tasks' queries: (B, T*hq*wq, C)
        kv = ops.reshape(kv, (b, -1, c))
        k, v = self.k_proj(kv), self.v_proj(kv)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scores = ops.einsum("bnqd,bnkd->bnqk", q, k) * ops.cast(
            (c // self.num_heads) ** -0.5, q.dtype
        )
        if self.fuse_scores is not None:
            both = ops.stack([scores, self._message(previous)], axis=-1)  # (B, n, Q, K, 2)
            both = ops.reshape(
                ops.transpose(both, (0, 2, 3, 4, 1)),
                (b, ops.shape(scores)[2], ops.shape(scores)[3], 2 * self.num_heads),
            )
            scores = ops.transpose(self.fuse_scores(both), (0, 3, 1, 2))
        attended = ops.einsum("bnqk,bnkd->bnqd", ops.softmax(scores, axis=-1), v)
        attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)), (b, -1, c))
        attended = ops.reshape(self.out_proj(attended), (-1, *self.q_grid, c))
        up = ops.cast(tf.image.resize(attended, (h, w), method="bilinear"), flat.dtype)
        x = flat + up
        x = x + self.mlp2(self.mlp1(self.norm2(x)))
        return ops.reshape(x, (b, t, h, w, c)), scores

    def compute_output_shape(self, input_shape):
        t, (h, w), c = self.num_tasks, self.grid, self.dim
        q = t * self.q_grid[0] * self.q_grid[1]
        k = t * self.kv_grid[0] * self.kv_grid[1]
        return (None, t, h, w, c), (None, self.num_heads, q, k)

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "grid": self.grid,
            "dim": self.dim,
            "num_heads": self.num_heads,
            "kv_stride": self.kv_stride,
            "mlp_ratio": self.mlp_ratio,
            "message_grid": self.message_grid,
            "sync_batchnorm": self.sync_batchnorm,
        }


def _stack(maps: list, name: str):
    expanded = [
        keras.layers.Reshape((1, *m.shape[1:]), name=f"{name}_{i}")(m) for i, m in enumerate(maps)
    ]
    return keras.layers.Concatenate(axis=1, name=name)(expanded) if len(maps) > 1 else expanded[0]


def _unstack(x, tasks: list, name: str) -> dict:
    return {t: TaskSlice(i, name=f"{name}_{t}")(x) for i, t in enumerate(tasks)}


@keras.saving.register_keras_serializable(package="mtl_keras")
class TaskSlice(keras.layers.Layer):
    """``x[:, index]`` of stacked task maps ``(B, T, h, w, C)``."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def build_invpt(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "invpt",
    head_kwargs: Mapping | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    name: str = "invpt",
) -> keras.Model:
    """InvPT: preliminary predictions, inverted-pyramid multi-task attention, fusion.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name (``"keras_hub.ViTBackbone"``, ``"preset:<dir>"``,
            ``"resnet50"``, ...) or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder.
        head: ``"invpt"`` (or ``"hrnet"``, the recipes' default).
        head_kwargs: decoder options: ``embed_dim`` (None: half the coarsest level's channels,
            512 on ViT-L), ``prediction_channels`` (64), ``levels`` (``P3, P4, P5``),
            ``num_heads`` (2), ``kv_strides`` ((2, 4, 8)), ``mlp_ratio`` (4),
            ``sync_batchnorm`` (True).
        image_size: ``(H, W)`` of the input; required (the attention is built for its grid).
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        name: model name.

    Returns:
        A functional model mapping raw images to ``{task: (B, H, W, channels)}`` plus
        ``{"{task}/preliminary": (B, H/32, W/32, channels)}``.

    Example:
        >>> model = build_invpt(["semseg", "depth"], backbone="resnet10",
        ...     backbone_kwargs={"width": 8}, head_kwargs={"embed_dim": 16},
        ...     image_size=(64, 64), task_options={"semseg": {"num_classes": 5}})
        >>> sorted(model.output)
        ['depth', 'depth/preliminary', 'semseg', 'semseg/preliminary']
    """
    specs = resolve(tasks, task_options)
    names = list(specs)
    opts = tblocks.transformer_options("invpt", head, head_kwargs, DEFAULTS)
    sync = bool(opts["sync_batchnorm"])
    levels_names = list(opts["levels"])
    strides = list(opts["kv_strides"])
    if len(strides) != len(levels_names):
        raise ValueError(
            f"invpt: kv_strides {strides} must have one stride per level {levels_names}"
        )
    image = image_input(image_size)
    levels = tblocks.encode_levels("invpt", image, backbone, backbone_kwargs, levels_names)
    coarsest = levels[-1]
    embed = tblocks.scaled(opts["embed_dim"], coarsest.shape[-1], 0.5)
    dim0 = embed + int(opts["prediction_channels"])
    heads = int(opts["num_heads"])
    dims = [max(dim0 // 2**i // heads, 1) * heads for i in range(len(levels))]

    # === preliminary decoder ===
    outputs, maps = {}, {}
    for t, spec in specs.items():
        x = tblocks.conv_bn_act(
            coarsest, coarsest.shape[-1], 3, f"{t}_prelim1", sync_batchnorm=sync
        )
        x = tblocks.conv_bn_act(x, embed, 3, f"{t}_prelim2", sync_batchnorm=sync)
        pred = keras.layers.Conv2D(spec.channels, 1, name=f"{t}_prelim_out")(x)
        outputs[f"{t}/preliminary"] = pred
        mixed = keras.layers.Concatenate(name=f"{t}_mix_concat")([x, pred])
        maps[t] = keras.layers.Conv2D(dim0, 1, name=f"{t}_mix")(mixed)

    # === inverted pyramid: stages at the coarsest level's stride, then 2x finer each ===
    scores, message_grid, per_stage = None, None, []
    finest_target = None
    for s in range(len(levels)):
        skip = levels[len(levels) - 1 - s]
        if s > 0:
            for t in names:
                up = ResizeLike(name=f"{t}_stage{s}_up")([maps[t], skip])
                up = tblocks.conv_bn_act(up, dims[s], 3, f"{t}_stage{s}_embed", sync_batchnorm=sync)
                fused = keras.layers.Conv2D(dims[s], 3, padding="same", name=f"stage{s}_skip_{t}")(
                    skip
                )
                maps[t] = keras.layers.Add(name=f"{t}_stage{s}_fuse")([up, fused])
        grid = tuple(maps[names[0]].shape[1:3])
        block = MultiTaskAttentionBlock(
            len(names),
            grid,
            dims[s],
            num_heads=heads,
            kv_stride=strides[s],
            mlp_ratio=float(opts["mlp_ratio"]),
            message_grid=message_grid,
            sync_batchnorm=sync,
            name=f"stage{s}_attention",
        )
        stacked = _stack([maps[t] for t in names], f"stage{s}_stack")
        stacked, scores = block(stacked if scores is None else [stacked, scores])
        message_grid = block.q_grid
        stacked = keras.layers.LayerNormalization(epsilon=1e-5, name=f"stage{s}_norm")(stacked)
        maps = _unstack(stacked, names, f"stage{s}_task")
        per_stage.append(dict(maps))
        finest_target = skip

    # === multi-scale fusion at twice the last stage's resolution (stride 4) ===
    target = keras.layers.UpSampling2D(2, name="fusion_grid")(finest_target)
    for t, spec in specs.items():
        parts = []
        for s, stage_maps in enumerate(per_stage):
            x = stage_maps[t]
            if s > 0:
                x = keras.layers.Conv2D(dim0, 1, name=f"{t}_stage{s}_reduce")(x)
            parts.append(ResizeLike(name=f"{t}_stage{s}_to_fusion")([x, target]))
        x = keras.layers.Add(name=f"{t}_fusion")(parts) if len(parts) > 1 else parts[0]
        x = tblocks.conv_bn_act(x, dim0, 3, f"{t}_final", sync_batchnorm=sync)
        x = keras.layers.Conv2D(spec.channels, 1, name=f"{t}_final_out")(x)
        outputs[t] = blocks.to_image(x, image, t)
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)
