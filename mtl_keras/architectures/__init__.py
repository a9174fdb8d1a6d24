"""Architecture builders: ``build(name, tasks, **kwargs) -> keras.Model`` with dict outputs."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import keras

from mtl_keras._names import canonical
from mtl_keras.architectures.astmt import build_astmt
from mtl_keras.architectures.base import (
    ImageNormalization,
    SharedRepresentation,
    Sharing,
    is_auxiliary,
    sharing_of,
    task_of,
)
from mtl_keras.architectures.branched import build_branched
from mtl_keras.architectures.cross_stitch import build_cross_stitch
from mtl_keras.architectures.dpt import build_dpt
from mtl_keras.architectures.hard_sharing import build_hard_sharing, build_single_task
from mtl_keras.architectures.init_from_single_task import (
    SOFT_SHARING_ARCHITECTURES,
    init_from_single_task,
    load_single_task_networks,
)
from mtl_keras.architectures.invpt import build_invpt
from mtl_keras.architectures.jtrl import build_jtrl
from mtl_keras.architectures.mlore import build_mlore
from mtl_keras.architectures.mtan import build_mtan
from mtl_keras.architectures.mtinet import build_mtinet
from mtl_keras.architectures.nddr import build_nddr
from mtl_keras.architectures.padnet import build_padnet
from mtl_keras.architectures.papnet import build_papnet
from mtl_keras.architectures.sluice import build_sluice
from mtl_keras.architectures.weights_file import WeightsMismatchError, load_weights_file


def _single_task(tasks, **kwargs):
    """One task's network: hard sharing's encoder and head (a single-task baseline of Δ_MTL)."""
    tasks = list(tasks)
    if len(tasks) != 1:
        names = [getattr(t, "name", t) for t in tasks]
        raise ValueError(
            f"single_task takes exactly one task, got {len(tasks)}: {names}; give one task (e.g. "
            "--set tasks=semseg) or use a multi-task architecture such as hard_sharing"
        )
    return build_single_task(tasks[0], **kwargs)


# the keyword arguments of ``_single_task`` are those of ``build_hard_sharing``
_single_task.__signature__ = inspect.signature(build_hard_sharing)


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "single_task": _single_task,
    "hard_sharing": build_hard_sharing,
    # encoder-focused (Vandenhende et al., TPAMI 2022, Sec. 3.1)
    "cross_stitch": build_cross_stitch,
    "sluice": build_sluice,
    "nddr_cnn": build_nddr,
    "mtan": build_mtan,
    "branched": build_branched,
    "astmt": build_astmt,
    # decoder-focused (Vandenhende et al., TPAMI 2022, Sec. 3.2)
    "padnet": build_padnet,
    "mtinet": build_mtinet,
    "papnet": build_papnet,
    "jtrl": build_jtrl,
    # transformer era (shared ViT-family encoders, multi-task decoders)
    "dpt": build_dpt,
    "invpt": build_invpt,
    "mlore": build_mlore,
}


# the papers' names that differ from the registered ones by more than case, "-" and "_"
# ("MTI-Net", "pad_net" and "cross-stitch" need none)
ALIASES = {
    "nddr": "nddr_cnn",
    "sluice_network": "sluice",
    "hard_parameter_sharing": "hard_sharing",
    "stl": "single_task",
}


def available() -> list[str]:
    return list(ARCHITECTURES)


def keyword_arguments(name: str) -> list[str]:
    """The keyword arguments the builder of architecture ``name`` accepts."""
    name = canonical("architecture", name, available(), ALIASES)
    parameters = list(inspect.signature(ARCHITECTURES[name]).parameters.values())[1:]
    return [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]


def build(name: str, tasks, **kwargs) -> keras.Model:
    """Build architecture ``name`` for ``tasks``.

    ``name`` is a registered name, written in any case with ``-`` or ``_`` (``"MTI-Net"``), or
    one of :data:`ALIASES` (``"nddr"``).

    Raises:
        ValueError: an unknown architecture, or keyword arguments its builder does not take
            (the message lists the valid ones).
    """
    name = canonical("architecture", name, available(), ALIASES)
    valid = keyword_arguments(name)
    parameters = inspect.signature(ARCHITECTURES[name]).parameters.values()
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown and not open_ended:
        raise ValueError(
            f"architecture {name!r} takes no argument(s) {unknown}; its keyword arguments: "
            f"{', '.join(valid)}"
        )
    return ARCHITECTURES[name](tasks, **kwargs)


__all__ = [
    "ALIASES",
    "ARCHITECTURES",
    "ImageNormalization",
    "SOFT_SHARING_ARCHITECTURES",
    "SharedRepresentation",
    "Sharing",
    "WeightsMismatchError",
    "available",
    "build",
    "build_astmt",
    "build_branched",
    "build_cross_stitch",
    "build_dpt",
    "build_hard_sharing",
    "build_invpt",
    "build_jtrl",
    "build_mlore",
    "build_mtan",
    "build_mtinet",
    "build_nddr",
    "build_padnet",
    "build_papnet",
    "build_single_task",
    "build_sluice",
    "init_from_single_task",
    "is_auxiliary",
    "keyword_arguments",
    "load_single_task_networks",
    "load_weights_file",
    "sharing_of",
    "task_of",
]
