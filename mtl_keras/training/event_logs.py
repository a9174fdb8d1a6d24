"""TensorBoard logs that a resumed run continues without repeating, losing or cutting an epoch.

A run killed between two resume states leaves event files holding summaries of the epoch it was
in (the resumed run trains that epoch again and would log it twice), may lose summaries of
epochs the resume state records (still in a writer's buffer), and may end a file in half a
record. So the logs are committed with the resume state:

* :class:`DurableTensorBoard` flushes its writers at the end of every epoch;
* :class:`LogCommit`, just before the resume state is written, records the size of every file
  under the log folder in ``<backup>/logs-NNNN.json`` (``NNNN``: the epoch the state will
  name; ``0000`` when the run starts afresh);
* :func:`roll_back`, when a run starts from a resume state, cuts every file back to the size
  recorded for that epoch and removes the files created after it. Event files grow record by
  record, so what is left is whole records, each epoch once.
"""

from __future__ import annotations

import glob
import json
import os

import keras

from mtl_keras.training.callbacks import atomic_write_text


def log_sizes(folder: str) -> dict[str, int]:
    """``{path relative to folder: size in bytes}`` of every file under ``folder``."""
    sizes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, folder)] = os.path.getsize(path)
    return sizes


def _record(backup_dir: str, epoch: int) -> str:
    return os.path.join(backup_dir, f"logs-{epoch:04d}.json")


def recorded(backup_dir: str, epoch: int) -> bool:
    """Whether the log sizes of ``epoch``'s resume state are recorded in ``backup_dir``."""
    return os.path.exists(_record(backup_dir, epoch))


def roll_back(folder: str, backup_dir: str, epoch: int) -> list[str]:
    """Return ``folder`` to the sizes recorded for ``epoch``; returns the files cut or removed.

    Without a record of epoch 0 the folder is emptied: a run records its start
    (:meth:`LogCommit.on_train_begin`), so what the folder holds was written by an attempt killed
    before that (its HParams), and the resumed run writes it again. Without a record of a later
    epoch the folder is left alone.
    """
    kept = {}
    if recorded(backup_dir, epoch):
        with open(_record(backup_dir, epoch)) as f:
            kept = json.load(f)
    elif epoch > 0:
        return []
    changed = []
    for path, size in log_sizes(folder).items():
        if path not in kept:
            os.remove(os.path.join(folder, path))
        elif size > kept[path]:
            os.truncate(os.path.join(folder, path), kept[path])
        else:
            continue
        changed.append(path)
    return changed


class DurableTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback with every epoch's summaries on disk when the epoch ends."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in getattr(self, "_writers", {}).values():
            writer.flush()


class LogCommit(keras.callbacks.Callback):
    """Records the log folder's file sizes for the resume state of the epoch that ends.

    Place it after every callback that logs and before the
    :class:`~mtl_keras.training.callbacks.TrainingBackup`.

    Args:
        folder: the run's TensorBoard folder.
        backup_dir: the resume state's folder.
        initial_epoch: the epoch training starts at (0: a fresh run, whose start is recorded
            too, so that a run killed in its first epoch is rolled back to it).
        write: whether this process writes (the chief).
    """

    def __init__(self, folder: str, backup_dir: str, *, initial_epoch: int = 0, write=True):
        super().__init__()
        self.folder, self.backup_dir, self.write = folder, backup_dir, write
        self.initial_epoch = initial_epoch

    def _commit(self, epoch: int) -> None:
        atomic_write_text(_record(self.backup_dir, epoch), json.dumps(log_sizes(self.folder)))
        for old in glob.glob(os.path.join(glob.escape(self.backup_dir), "logs-*.json")):
            if int(os.path.basename(old)[5:9]) < epoch - 1:  # the state's epoch stays readable
                os.remove(old)

    def on_train_begin(self, logs=None):
        if self.write and self.initial_epoch == 0:
            self._commit(0)

    def on_epoch_end(self, epoch, logs=None):
        if self.write:
            self._commit(epoch + 1)
