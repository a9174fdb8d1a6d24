"""Gradient paths: where a step's gradients come from and what the balancer sees of them.

One file per path: :mod:`.loss` (the balancer combines the losses), :mod:`.shared` (the Jacobian
of the shared variables), :mod:`.representation` (per-task gradients of the shared
representation), :mod:`.multi_batch` (the shared variables' per-task gradients on several
mini-batches per step), :mod:`.bilevel` (the losses, with task weights meta-learned by a
look-ahead on a held-out mini-batch). :func:`choose` picks one, once, from the balancer's declared
needs and the network's sharing; a new path is a new file registered in :data:`PATHS`.
"""

from __future__ import annotations

from mtl_keras.balancing import method_name
from mtl_keras.training.gradient_paths.base import GradientPath, Record, Update
from mtl_keras.training.gradient_paths.bilevel import BilevelPath
from mtl_keras.training.gradient_paths.loss import LossPath
from mtl_keras.training.gradient_paths.multi_batch import MultiBatchPath
from mtl_keras.training.gradient_paths.representation import RepresentationPath
from mtl_keras.training.gradient_paths.shared import SharedPath

PATHS: dict[str, type[GradientPath]] = {
    "loss": LossPath,
    "shared": SharedPath,
    "representation": RepresentationPath,
    "multi_batch": MultiBatchPath,
    "bilevel": BilevelPath,
}
SOURCES = ("auto", "shared", "representation")


def choose(balancer, sharing, source: str = "auto") -> str:
    """The path to run ``balancer`` on: ``"loss"`` for a loss-level balancer, else the gradient
    ``source`` asked for, or (``"auto"``) the first the balancer accepts that the network allows.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown gradient_source {source!r}; valid: {', '.join(SOURCES)}")
    accepted = list(balancer.needs.paths)
    if "loss" in accepted:
        return "loss"
    if "bilevel" in accepted:  # the losses, and a look-ahead on a held-out mini-batch
        if source != "auto":
            raise ValueError(
                f"balancer {method_name(balancer)!r} weighs the losses (the bilevel path): it "
                f"takes no gradient_source (got {source!r}); leave it 'auto'"
            )
        return "bilevel"
    if "multi_batch" in accepted:  # the shared variables' gradients on several mini-batches
        if source not in ("auto", "shared") or not sharing.shared_variables:
            raise ValueError(
                f"balancer {method_name(balancer)!r} runs on the shared variables' gradients of "
                f"several mini-batches: it needs shared variables and gradient_source='auto' or "
                f"'shared' (got {source!r})"
            )
        return "multi_batch"
    allowed = [
        p
        for p in accepted
        if (p != "representation" or sharing.representation_layers)
        and (p != "shared" or sharing.shared_variables)
    ]
    if source == "auto":
        if not allowed:
            raise ValueError(
                f"balancer {method_name(balancer)!r} needs {tuple(accepted)} but the network has "
                "neither shared variables nor a declared shared representation"
            )
        return allowed[0]
    if source not in allowed:
        raise ValueError(
            f"gradient_source={source!r} is not possible here: balancer "
            f"{method_name(balancer)!r} accepts {accepted}, and the network "
            + (
                "declares no SharedRepresentation"
                if source == "representation"
                else "has no shared variables"
            )
        )
    return source


__all__ = [
    "PATHS",
    "SOURCES",
    "BilevelPath",
    "GradientPath",
    "LossPath",
    "MultiBatchPath",
    "Record",
    "RepresentationPath",
    "SharedPath",
    "Update",
    "choose",
]
