"""Hard parameter sharing and single-task baselines.

One shared backbone feeds one head per task (Caruana, 1997; the "MTL baseline" of Vandenhende et
al., TPAMI 2022, Sec. 5). The single-task baseline is the same network with one task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import keras

from mtl_keras import backbones, heads
from mtl_keras.architectures.base import ImageNormalization, SharedRepresentation, mark_task_outputs
from mtl_keras.heads.simple import ResizeLike
from mtl_keras.tasks import TaskSpec, resolve

#: pyramid levels each head reads by default
HEAD_FEATURES = {"deeplab": ("P5",), "conv": ("P5",), "hrnet": ("P2", "P3", "P4", "P5")}


def image_input(image_size: Sequence[int | None] | None) -> keras.KerasTensor:
    """Raw-pixel image input (uint8 or float in 0..255) of size ``(H, W)``, or any size."""
    h, w = tuple(image_size) if image_size else (None, None)
    return keras.Input((h, w, 3), name="image")


def shared_backbone(
    image: keras.KerasTensor,
    backbone: str | keras.Model,
    backbone_kwargs: Mapping | None,
    features: Iterable[str],
) -> list:
    """Normalise, run the backbone, mark the chosen pyramid levels as the shared representation."""
    if isinstance(backbone, str):
        backbone = backbones.get(backbone, **dict(backbone_kwargs or {}))
    pyramid = backbone(ImageNormalization(name="normalize")(image))
    missing = [f for f in features if f not in pyramid]
    if missing:
        raise ValueError(f"backbone has no level(s) {missing}; it provides {sorted(pyramid)}")
    return [SharedRepresentation(name=f"shared_{f}")(pyramid[f]) for f in features]


def task_head(
    image, feats: list, spec: TaskSpec, head: str, head_kwargs: Mapping | None, name: str
) -> keras.KerasTensor:
    """One head for one task, resized to the input resolution."""
    head_fn = heads.get(head)
    x = head_fn(
        feats if head == "hrnet" else feats[0], spec.channels, name=name, **dict(head_kwargs or {})
    )
    return ResizeLike(interpolation="bilinear", name=name)([x, image])


def build_hard_sharing(
    tasks: Iterable[str | TaskSpec],
    *,
    backbone: str | keras.Model = "resnet18",
    backbone_kwargs: Mapping | None = None,
    head: str = "deeplab",
    head_kwargs: Mapping | None = None,
    features: Sequence[str] | None = None,
    image_size: Sequence[int | None] | None = None,
    task_options: Mapping[str, Mapping] | None = None,
    name: str = "hard_sharing",
) -> keras.Model:
    """Shared encoder, one head per task; outputs ``{task: (B, H, W, channels)}``.

    Args:
        tasks: task names or TaskSpecs.
        backbone: registered backbone name or a built backbone returning a pyramid dict.
        backbone_kwargs: arguments of the backbone builder (``output_stride``, ``width``, ...).
        head: ``"deeplab"`` (ASPP), ``"hrnet"`` (multi-scale fusion) or ``"conv"``.
        head_kwargs: arguments of the head builder.
        features: pyramid levels given to the heads (default depends on the head).
        image_size: ``(H, W)`` of the input, or None for any size.
        task_options: per-task arguments of the TaskSpec factories (e.g. class counts).
        name: model name.

    Example:
        >>> model = build_hard_sharing(["semseg", "depth"], backbone_kwargs={"width": 8},
        ...                            head="conv", image_size=(32, 32),
        ...                            task_options={"semseg": {"num_classes": 5}})
        >>> sorted(model.output)
        ['depth', 'semseg']
    """
    specs = resolve(tasks, task_options)
    if head not in HEAD_FEATURES:
        raise ValueError(f"unknown head {head!r}; valid heads: {', '.join(HEAD_FEATURES)}")
    image = image_input(image_size)
    feats = shared_backbone(image, backbone, backbone_kwargs, features or HEAD_FEATURES[head])
    outputs = {t: task_head(image, feats, s, head, head_kwargs, t) for t, s in specs.items()}
    return keras.Model(image, mark_task_outputs(outputs, specs), name=name)


def build_single_task(task: str | TaskSpec, **kwargs) -> keras.Model:
    """The single-task baseline: :func:`build_hard_sharing` with one task."""
    spec = next(iter(resolve([task], kwargs.pop("task_options", None)).values()))
    kwargs.setdefault("name", f"single_task_{spec.name}")
    return build_hard_sharing([spec], **kwargs)
