"""What a run folder belongs to: the recipe's fingerprint, the resume state it guards, clean-up.

A run is resumable: started again with the same recipe after a crash, it continues from its
:class:`~mtl_keras.training.callbacks.TrainingBackup` and ends with the weights of an
uninterrupted run. The fingerprint is the part of the recipe that determines those weights; the
run folder records the recipe in ``recipe.json`` when a run starts, and a run with another
fingerprint is refused there (:func:`claim_run_folder`) rather than mixed with it.

A run is finished once it has written ``results.json`` and removed its resume state. Started
again, a finished run is reported, not trained again into the same checkpoint and TensorBoard
folder (:func:`finished_summary`); :func:`new_run` gives a recipe its next run folder instead.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil

from mtl_keras.training.callbacks import ResumeStateError, TrainingBackup, atomic_write_text
from mtl_keras.training.recipe import Recipe

#: Recipe fields that do not change the trained weights: a resume state ignores them.
NOT_IN_FINGERPRINT = (
    "run_dir",
    "run_name",
    "export_dir",
    "export_version",
    "baselines",
    "image_summaries",
    "strategy",
    "worker_timeout",
    "resume",
    "deterministic",
    "jit_compile",
)

#: The record of the run a folder belongs to: the recipe, written when the run starts.
RECIPE_FILE = "recipe.json"

#: What a run writes when it has finished: its metrics, baselines and paths.
RESULTS_FILE = "results.json"

#: Hidden temporaries of the atomic writers, left behind by a killed process: checkpoints,
#: resume states and ``recipe.json`` (``callbacks.atomic_write_text``) and exports
#: (``export_saved_model``) use ``.tmp-*``; result files (``metrics.write_results``) ``.*.tmp``.
TEMPORARY_PATTERNS = (".tmp-*", ".*.tmp")


def fingerprint(recipe: Recipe) -> dict:
    """The recipe fields that determine the trained weights (what a resume state must match)."""
    return {k: v for k, v in recipe.to_dict().items() if k not in NOT_IN_FINGERPRINT}


def recorded_differences(folder: str, recipe: Recipe) -> list[str] | None:
    """The fingerprint fields in which the run recorded in ``folder`` differs from ``recipe``.

    Returns ``None`` when ``folder`` holds no ``recipe.json`` (no run started there), else the
    sorted differing field names (empty: the folder is ``recipe``'s).

    Raises:
        ResumeStateError: ``recipe.json`` is not a JSON object.
    """
    path = os.path.join(folder, RECIPE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            stored = json.load(f)
    except json.JSONDecodeError:
        stored = None
    if not isinstance(stored, dict):
        raise ResumeStateError(
            f"{path} does not hold a recipe as JSON; delete {folder} to start afresh"
        )
    wanted = json.loads(json.dumps(fingerprint(recipe), default=str))
    return sorted(k for k in wanted if stored.get(k) != wanted[k])


def claim_run_folder(recipe: Recipe, *, write: bool) -> None:
    """Make ``recipe.output_dir`` the folder of ``recipe``'s run, at the run's start.

    A folder recorded for a run with another fingerprint is refused (its checkpoint, results and
    resume state are that run's); otherwise, with ``write`` (the chief), the temporaries of
    writers killed mid-write (:data:`TEMPORARY_PATTERNS`) are removed from the folder, its
    ``checkpoints`` and ``backup`` and the run's export folder, and ``recipe.json`` is written
    atomically.

    Raises:
        ResumeStateError: the folder belongs to a run with other settings.
    """
    folder = recipe.output_dir
    differ = recorded_differences(folder, recipe)
    if differ:
        raise ResumeStateError(
            f"the run folder {folder} belongs to a run of {recipe.name!r} with other {differ} "
            f"(see {os.path.join(folder, RECIPE_FILE)}). To start this run afresh, delete "
            f"{folder}, choose another run folder (--set run_dir=DIR) or train in a new one "
            "beside it (mtl-keras train --new-run); to continue that run, start it again with "
            "its own settings"
        )
    if not write:
        return
    for where in (
        folder,
        os.path.join(folder, "checkpoints"),
        os.path.join(folder, "backup"),
        os.path.join(recipe.export_dir, recipe.name),
    ):
        remove_temporaries(where)
    atomic_write_text(
        os.path.join(folder, RECIPE_FILE), json.dumps(recipe.to_dict(), indent=2, default=str)
    )


def is_finished(folder: str, recipe: Recipe) -> bool:
    """Whether ``folder`` holds a finished run of ``recipe``: its ``results.json``, recorded for
    the same fingerprint, and no resume state left (the run removes it last)."""
    return (
        os.path.exists(os.path.join(folder, RESULTS_FILE))
        and not os.path.exists(os.path.join(folder, "backup", TrainingBackup.STATE))
        and recorded_differences(folder, recipe) == []
    )


def finished_summary(recipe: Recipe) -> dict | None:
    """The summary of ``recipe``'s finished run, from its ``results.json``, else ``None``.

    A rerun of a finished recipe returns this instead of training again (which would overwrite
    its checkpoint, write a second set of curves over the first in its TensorBoard folder, and
    export another version of the same model). ``already_finished`` is true in it.

    Raises:
        ResumeStateError: ``results.json`` is not a JSON object.
    """
    folder = recipe.output_dir
    if not is_finished(folder, recipe):
        return None
    path = os.path.join(folder, RESULTS_FILE)
    try:
        with open(path) as f:
            stored = json.load(f)
    except json.JSONDecodeError:
        stored = None
    if not isinstance(stored, dict):
        raise ResumeStateError(f"{path} does not hold a run's results as JSON; delete it to train")
    return {"recipe": stored.pop("task", recipe.name), **stored, "already_finished": True}


def new_run(recipe: Recipe) -> Recipe:
    """``recipe`` in a new run folder of ``run_dir`` (``mtl-keras train --new-run``).

    The folders of a recipe are ``<name>``, ``<name>-2``, ``<name>-3``, ...: this is the newest
    one when it holds an unfinished run of the same settings (so the same command resumes it
    after a crash), else the first that does not exist. Each has its own checkpoints, results
    and TensorBoard logs; its export is the next version of ``<export_dir>/<name>``.
    """
    names = [recipe.name]
    while os.path.exists(os.path.join(recipe.run_dir, names[-1])):
        names.append(f"{recipe.name}-{len(names) + 1}")
    if len(names) > 1:
        newest = os.path.join(recipe.run_dir, names[-2])
        if recorded_differences(newest, recipe) == [] and not is_finished(newest, recipe):
            return dataclasses.replace(recipe, run_name=names[-2])
    return dataclasses.replace(recipe, run_name=names[-1])


def remove_temporaries(folder: str) -> list[str]:
    """Remove the atomic writers' temporary files and folders in ``folder``; returns them."""
    where = glob.escape(folder)
    found = sorted({p for pat in TEMPORARY_PATTERNS for p in glob.glob(os.path.join(where, pat))})
    for path in found:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    return found


def training_backup(recipe: Recipe, *, write: bool) -> TrainingBackup:
    """The resume state of ``recipe``'s run, in ``<output_dir>/backup`` (``write``: the chief)."""
    return TrainingBackup(
        os.path.join(recipe.output_dir, "backup"), fingerprint=fingerprint(recipe), write=write
    )
