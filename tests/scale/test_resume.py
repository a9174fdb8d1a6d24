"""Resume after a crash: a run SIGKILLed part-way and started again with the same command ends
with exactly the weights (network, optimizer, balancer) of an uninterrupted run; the resume
state is written atomically and refused when the recipe changed."""

import json
import os

import keras
import numpy as np
import pytest

from mtl_keras.training import resume
from mtl_keras.training import run as run_module
from mtl_keras.training.callbacks import ResumeStateError, TrainingBackup
from tests.scale.conftest import load_state, logged, run_worker
from tests.scale.worker import tiny_recipe
from tests.utils import micro_network, tiny_arrays, tiny_specs


def _assert_same_state(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.large
def test_killed_run_resumes_to_the_uninterrupted_weights(reference, tmp_path):
    out = str(tmp_path / "final.npz")
    """The resumed run is bit for bit the uninterrupted one-process run ``reference``; that also
    shows that two fresh runs of a recipe and seed (a stochastic balancer's among them) are the
    same, data order and weights."""
    rc, log = run_worker(tmp_path, out, MTL_KERAS_TEST_KILL_AT="2:1")
    assert rc == -9, log  # SIGKILL after step 1 of epoch 2: no clean-up ran
    backup = tmp_path / "runs" / "scale" / "backup"
    assert json.loads((backup / "state.json").read_text())["epoch"] == 1
    assert not os.path.exists(out)

    rc, log = run_worker(tmp_path, out)  # the same command again
    assert rc == 0, log
    assert json.loads(open(out + ".json").read())["resumed_from_epoch"] == 1
    _assert_same_state(load_state(out), reference[0])
    assert not backup.exists()  # removed once the run finished
    # each epoch's summaries once: those the killed run wrote in epoch 2 were rolled back
    seen = logged(str(tmp_path / "runs" / "scale" / "tensorboard"))
    assert seen and set(seen.values()) == {1}, seen
    for log in ("train", "validation"):
        assert sorted(s for w, t, s in seen if (w, t) == (log, "epoch_loss")) == [0, 1]


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt  # stopped in its first epoch, before any resume state


def test_a_run_stopped_in_its_first_epoch_logs_its_start_once_when_resumed(tmp_path):
    recipe = tiny_recipe([f"run_dir={tmp_path}"])
    with pytest.raises(KeyboardInterrupt):
        run_module.train(recipe, verbose=0, export=False, callbacks=[_Interrupt()])
    summary = run_module.train(recipe, verbose=0, export=False)
    assert summary["resumed_from_epoch"] == 0
    seen = logged(os.path.join(recipe.output_dir, "tensorboard"))
    assert seen[(".", "_hparams_/session_start_info", 0)] == 1, seen  # HParams once, not twice
    assert seen and set(seen.values()) == {1}, seen


TASKS = ("semseg", "depth")


def _model():
    from mtl_keras.training import MultiTaskModel

    keras.utils.set_random_seed(0)
    model = MultiTaskModel(micro_network(TASKS), list(tiny_specs(TASKS).values()), "dwa")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    return model


def _step(model):
    arrays = tiny_arrays(TASKS, n=2, size=16)
    model.train_on_batch(arrays["image"], {t: arrays[t] for t in TASKS})


def test_backup_round_trip_and_atomic_replacement(tmp_path, monkeypatch):
    model = _model()
    backup = TrainingBackup(str(tmp_path), fingerprint={"seed": 0})
    backup.set_model(model)
    assert backup.restore(model) == 0  # nothing saved yet
    _step(model)  # non-zero momentum and iteration count
    backup.on_epoch_end(0)
    saved = [v.numpy().copy() for v in [*model.weights, *model.optimizer.variables]]
    assert model.optimizer.iterations.numpy() == 1
    _step(model)

    def crash(path, **kwargs):  # a writer killed half-way through the next save
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model, "save_weights", crash)
    with pytest.raises(OSError, match="disk full"):
        backup.on_epoch_end(1)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["epoch-0001.weights.h5", "state.json"]

    fresh = _model()
    assert TrainingBackup(str(tmp_path), fingerprint={"seed": 0}).restore(fresh) == 1
    restored = [*fresh.weights, *fresh.optimizer.variables]
    assert len(restored) == len(saved)
    for a, b in zip(saved, restored):  # network, balancer (DWA's loss history) and momentum
        np.testing.assert_array_equal(a, b.numpy(), err_msg=b.path)

    backup.on_epoch_end(1)  # a later save replaces the pair and removes the old weights
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.weights.h5", "state.json"]
    backup.clear()
    assert not tmp_path.exists()


def test_backup_of_another_recipe_is_refused(tmp_path):
    model = _model()
    backup = TrainingBackup(str(tmp_path), fingerprint={"seed": 0, "balancer": "dwa"})
    backup.set_model(model)
    backup.on_epoch_end(0)
    other = TrainingBackup(str(tmp_path), fingerprint={"seed": 1, "balancer": "dwa"})
    with pytest.raises(ResumeStateError, match=r"differs in \['seed'\].*delete"):
        other.restore(_model())


def test_resume_fingerprint_ignores_output_only_fields():
    a = tiny_recipe()
    b = tiny_recipe(["run_dir=elsewhere", "image_summaries=0", "worker_timeout=5"])
    assert resume.fingerprint(a) == resume.fingerprint(b)
    assert resume.fingerprint(a) != resume.fingerprint(tiny_recipe(["seed=1"]))
