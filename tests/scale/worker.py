"""One training process of the scale-out tests: ``python -m tests.scale.worker OUT [KEY=VALUE...]``.

Trains :data:`TINY` (with the ``KEY=VALUE`` overrides, as ``mtl-keras train --set``) through
:func:`mtl_keras.training.run.train`, then writes the network's and the optimizer's final
variables to ``OUT`` (``.npz``) and the run summary to ``OUT + ".json"``. With
``MTL_KERAS_TEST_KILL_AT=EPOCH:STEP`` in the environment the process SIGKILLs itself after that
training step (both counted from 1): a crash with no chance to clean up. With
``MTL_KERAS_TEST_LOGICAL_CPUS=N`` it splits its CPU into ``N`` logical devices
(``strategy=mirrored`` then trains ``N`` replicas in this one process).
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

if os.environ.get("MTL_KERAS_TEST_LOGICAL_CPUS"):  # before TensorFlow starts its devices
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * int(os.environ["MTL_KERAS_TEST_LOGICAL_CPUS"]),
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from mtl_keras.training import run  # noqa: E402
from mtl_keras.training.recipe import Recipe  # noqa: E402
from tests.utils import TINY_RECIPE  # noqa: E402

#: Two tasks, a 32 px ResNet-10 of width 8 and conv heads, 2 epochs of 2 steps of 4 images;
#: GradVac: stochastic (seeded partner orders), stateful (EMA targets), gradient level.
TINY = {
    **TINY_RECIPE,
    "name": "scale",
    "epochs": 2,
    "balancer": "gradvac",
    "optimizer": "sgd",
    "learning_rate": 0.05,
    "deterministic": True,
    "image_summaries": 1,
}


def tiny_recipe(overrides=()) -> Recipe:
    return Recipe(**TINY).with_overrides(list(overrides))


class KillAt(keras.callbacks.Callback):
    """SIGKILLs this process after training step ``step`` of epoch ``epoch`` (from 1)."""

    def __init__(self, epoch: int, step: int):
        super().__init__()
        self.epoch, self.step, self._current = epoch, step, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if (self._current, batch + 1) == (self.epoch, self.step):
            os.kill(os.getpid(), signal.SIGKILL)


def final_state(model) -> dict[str, np.ndarray]:
    arrays = {
        f"net/{i}/{v.name}": keras.ops.convert_to_numpy(v)
        for i, v in enumerate(model.network.weights)
    }
    arrays.update(
        {
            f"opt/{i}/{v.name}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(model.optimizer.variables)
        }
    )
    arrays.update(
        {
            f"bal/{i}/{v.name}": keras.ops.convert_to_numpy(v)
            for i, v in enumerate(model.balancer.weights)
        }
    )
    return arrays


def worker_index() -> int:
    """This process's task index in ``TF_CONFIG`` (0 without it)."""
    raw = os.environ.get("TF_CONFIG")
    return json.loads(raw)["task"]["index"] if raw else 0


class SaveEachWorker(keras.callbacks.Callback):
    """Writes worker ``i``'s final state to ``<folder>/worker<i>.npz`` (workers launched by Ray)."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def on_train_end(self, logs=None):
        np.savez(
            os.path.join(self.folder, f"worker{worker_index()}.npz"), **final_state(self.model)
        )


class KillOnce(keras.callbacks.Callback):
    """SIGKILLs worker ``worker`` after its ``step``-th training step (from 1, over the epochs
    this process trains), once: the ``marker`` file, written first, records that it happened."""

    def __init__(self, marker: str, worker: int, step: int):
        super().__init__()
        self.marker, self.worker, self.step, self._steps = marker, worker, step, 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if self._steps == self.step and worker_index() == self.worker:
            if not os.path.exists(self.marker):
                with open(self.marker, "w") as f:
                    f.write(f"pid {os.getpid()}")
                os.kill(os.getpid(), signal.SIGKILL)


class SaveAtEnd(keras.callbacks.Callback):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_end(self, logs=None):
        np.savez(self.path, **final_state(self.model))


def main(argv: list[str]) -> int:
    out, overrides = argv[0], argv[1:]
    callbacks = [SaveAtEnd(out)]
    kill_at = os.environ.get("MTL_KERAS_TEST_KILL_AT")
    if kill_at:
        callbacks.append(KillAt(*(int(v) for v in kill_at.split(":"))))
    summary = run.train(tiny_recipe(overrides), verbose=0, export=False, callbacks=callbacks)
    summary.pop("table")
    with open(out + ".json", "w") as f:
        json.dump(summary, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
