"""Callbacks: atomic checkpoints, the resume state, the non-finite-loss guard and image grids."""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def _fsync_directory(directory: str) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _readable_temp_file(directory: str, suffix: str) -> str:
    """A new hidden temporary file in ``directory`` with the permissions ``open`` would give."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file and a rename: all or nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _readable_temp_file(directory, ".txt")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_save_weights(model: keras.Model, path: str) -> str:
    """Write ``model``'s weights to ``path`` (``.weights.h5``) so no reader sees a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = _readable_temp_file(directory, ".weights.h5")
    try:
        model.save_weights(tmp, overwrite=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class ResumeStateError(ValueError):
    """A resume state exists but cannot be used for this run."""


class TrainingBackup(keras.callbacks.Callback):
    """Resume state of a run: everything needed to continue after a crash, written atomically.

    At the end of every epoch the model's weights, which include the optimizer's variables
    (moments, iteration count, loss scale) and the balancer's state, are written to
    ``<directory>/epoch-NNNN.weights.h5`` through a temporary file and a rename; then
    ``<directory>/state.json`` (the next epoch, that file's name and the run's fingerprint) is
    replaced the same way; only then are older weight files removed. A reader follows
    ``state.json`` and so only ever sees a complete pair, whenever the writer was killed.

    :meth:`restore` loads the state into a built model (optimizer built too) and returns the
    epoch to continue from; pass it to ``fit(initial_epoch=...)`` and skip that many epochs of
    data (see :func:`mtl_keras.training.run.train`). Unlike ``keras.callbacks.BackupAndRestore``,
    weights and epoch are replaced together, and a state written by a different recipe is refused.

    Under a multi-worker strategy only the chief writes (``write=False`` elsewhere); every worker
    restores from the same directory, so it must be on a filesystem they share.

    Args:
        directory: where the state lives (nothing else should be written there).
        fingerprint: JSON-able description of the run (e.g. the recipe); a state written with
            another fingerprint is refused with the differing keys named.
        write: whether this process writes the state.
    """

    STATE = "state.json"

    def __init__(self, directory: str, *, fingerprint: dict | None = None, write: bool = True):
        super().__init__()
        self.directory = directory
        self.fingerprint = json.loads(json.dumps(fingerprint or {}, default=str))
        self.write = write

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, self.STATE)

    def read_state(self) -> dict | None:
        """The current state record, or None when there is none."""
        if not os.path.exists(self.state_path):
            return None
        with open(self.state_path) as f:
            return json.load(f)

    def restore(self, model: keras.Model) -> int:
        """Load the saved state into ``model`` and return the epoch to continue from (0: none)."""
        state = self.read_state()
        if state is None:
            return 0
        differ = sorted(
            k
            for k in set(self.fingerprint) | set(state.get("fingerprint", {}))
            if self.fingerprint.get(k) != state.get("fingerprint", {}).get(k)
        )
        if differ:
            raise ResumeStateError(
                f"the resume state in {self.directory} was written by a run that differs in "
                f"{differ}; rerun with the same settings to resume, or delete {self.directory} "
                "to start afresh"
            )
        path = os.path.join(self.directory, state["weights"])
        try:
            model.load_weights(path)
        except (OSError, ValueError) as err:
            raise ResumeStateError(
                f"cannot load the resume state {path} into this model ({err}); delete "
                f"{self.directory} to start afresh"
            ) from None
        return int(state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:
            return
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        atomic_save_weights(self.model, os.path.join(self.directory, name))
        record = {"epoch": epoch + 1, "weights": name, "fingerprint": self.fingerprint}
        atomic_write_text(self.state_path, json.dumps(record, indent=2))
        for old in glob.glob(os.path.join(self.directory, "epoch-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)
        for stale in glob.glob(os.path.join(self.directory, ".tmp-*")):
            os.remove(stale)  # left by a writer killed mid-write

    def note(self, **fields) -> None:
        """Add ``fields`` to the state record (atomically), e.g. the export a finished run wrote,
        so that a restart that finds the state does not write it again."""
        state = self.read_state()
        if not self.write or state is None:
            return
        atomic_write_text(self.state_path, json.dumps({**state, **fields}, indent=2))

    def clear(self) -> None:
        """Remove the state (after a run completed)."""
        if not self.write or not os.path.isdir(self.directory):
            return
        if os.path.exists(self.state_path):
            os.remove(self.state_path)
        for path in glob.glob(os.path.join(self.directory, "*")) + glob.glob(
            os.path.join(self.directory, ".tmp-*")
        ):
            os.remove(path)
        os.rmdir(self.directory)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves weights (model, optimizer-free) after every epoch whose losses are finite.

    ``<directory>/last.weights.h5`` is replaced atomically; a crash mid-write leaves the previous
    checkpoint intact, and an epoch that ended with a non-finite loss never overwrites it.

    ``written`` tells whether that file holds this run's weights: true once this callback has
    saved, and from the start for a run resumed from its backup (``resumed=True``: the run's
    earlier part saved it). A file left by an earlier run in the same folder is not this run's.
    """

    def __init__(self, directory: str, *, resumed: bool = False):
        super().__init__()
        self.directory = directory
        self.path = os.path.join(directory, "last.weights.h5")
        self.written = resumed and os.path.exists(self.path)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if all(math.isfinite(float(np.mean(v))) for k, v in logs.items() if k.endswith("loss")):
            atomic_save_weights(self.model, self.path)
            self.written = True


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite task loss and names the task.

    The error says which task(s) went non-finite, at which step, and where the last good
    checkpoint is (left untouched, see :class:`AtomicCheckpoint`).

    Args:
        task_names: the tasks whose ``{task}_loss`` logs are watched.
        checkpoint: the run's :class:`AtomicCheckpoint`, named once it holds this run's weights
            (``written``); or a path, named whenever that file exists.
    """

    def __init__(self, task_names, checkpoint: AtomicCheckpoint | str | None = None):
        super().__init__()
        self.task_names = tuple(task_names)
        self.checkpoint = checkpoint
        self._step = 0

    @property
    def last_good(self) -> str | None:
        """The checkpoint the error names, or None when this run has none yet."""
        if isinstance(self.checkpoint, AtomicCheckpoint):
            return self.checkpoint.path if self.checkpoint.written else None
        if self.checkpoint and os.path.exists(self.checkpoint):
            return self.checkpoint
        return None

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        logs = logs or {}
        bad = [
            t
            for t in self.task_names
            if f"{t}_loss" in logs and not math.isfinite(float(np.mean(logs[f"{t}_loss"])))
        ]
        if not bad and "loss" in logs and not math.isfinite(float(np.mean(logs["loss"]))):
            bad = ["<total>"]
        if bad:
            self.model.stop_training = True
            last_good = self.last_good
            where = (
                f"the last good checkpoint is kept at {last_good}"
                if last_good
                else "this run had not written a checkpoint yet"
            )
            raise NonFiniteLossError(
                f"non-finite loss for task(s) {bad} at training step {self._step}; {where}. "
                "Check those tasks' labels for NaN/inf values, lower the learning rate or the "
                "task's weight."
            )


class PredictionImages(keras.callbacks.Callback):
    """Writes, every epoch, a grid per task: image | label | prediction, for a fixed batch."""

    def __init__(self, logdir: str, images, labels: dict, tasks: dict, max_images: int = 4):
        super().__init__()
        self.images = np.asarray(images)[:max_images]
        self.labels = {t: np.asarray(v)[:max_images] for t, v in labels.items()}
        self.tasks = tasks
        self.writer = tf.summary.create_file_writer(os.path.join(logdir, "images"))

    def grids(self, model) -> dict[str, np.ndarray]:
        outputs = model(self.images, training=False)
        grids = {}
        for t, spec in self.tasks.items():
            pred = np.asarray(spec.activate(outputs[t]))
            rows = [
                np.concatenate(
                    [
                        self.images[i].astype(np.uint8),
                        spec.colorize(self.labels[t][i]),
                        spec.colorize(pred[i]),
                    ],
                    axis=1,
                )
                for i in range(len(self.images))
            ]
            grids[t] = np.concatenate(rows, axis=0)
        return grids

    def on_epoch_end(self, epoch, logs=None):
        if not len(self.images):  # image_summaries=0: nothing to draw
            return
        with self.writer.as_default():
            for t, grid in self.grids(self.model).items():
                tf.summary.image(f"{t}/image_label_prediction", grid[None], step=epoch)
        self.writer.flush()
