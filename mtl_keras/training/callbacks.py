"""Callbacks: atomic checkpoints, the non-finite-loss guard and TensorBoard image grids."""

from __future__ import annotations

import math
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


def atomic_save_weights(model: keras.Model, path: str) -> str:
    """Write ``model``'s weights to ``path`` (``.weights.h5``) so no reader sees a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=directory)
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves weights (model, optimizer-free) after every epoch whose losses are finite.

    ``<directory>/last.weights.h5`` is replaced atomically; a crash mid-write leaves the previous
    checkpoint intact, and an epoch that ended with a non-finite loss never overwrites it.
    """

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory
        self.path = os.path.join(directory, "last.weights.h5")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if all(math.isfinite(float(np.mean(v))) for k, v in logs.items() if k.endswith("loss")):
            atomic_save_weights(self.model, self.path)


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite task loss and names the task.

    The error says which task(s) went non-finite, at which step, and where the last good
    checkpoint is (left untouched, see :class:`AtomicCheckpoint`).
    """

    def __init__(self, task_names, checkpoint_path: str | None = None):
        super().__init__()
        self.task_names = tuple(task_names)
        self.checkpoint_path = checkpoint_path
        self._step = 0

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
            where = (
                f"the last good checkpoint is kept at {self.checkpoint_path}"
                if self.checkpoint_path and os.path.exists(self.checkpoint_path)
                else "no checkpoint had been written yet"
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
        with self.writer.as_default():
            for t, grid in self.grids(self.model).items():
                tf.summary.image(f"{t}/image_label_prediction", grid[None], step=epoch)
        self.writer.flush()
