"""Run-level checks of bad input: baselines read before training, a run folder refusing another
run's settings, temporaries of interrupted writers removed, checkpoints named only when they are
this run's."""

import dataclasses
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.metrics import write_results
from mtl_keras.training import NonFiniteLossError, ResumeStateError, run
from mtl_keras.training.callbacks import _readable_temp_file
from mtl_keras.training.recipe import Recipe
from tests.utils import TINY_RECIPE

TINY = {**TINY_RECIPE, "name": "checks", "optimizer": "sgd", "learning_rate": 0.05}


def tiny(root, **changes) -> Recipe:
    return Recipe(**{**TINY, "run_dir": str(root), "export_dir": str(root / "exports"), **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run of the tiny recipe: (its run_dir, summary)."""
    root = tmp_path_factory.mktemp("trained")
    return root, run.train(tiny(root), verbose=0, export=False)


def copy_of(trained, tmp_path):
    """``tmp_path`` holding a copy of the trained run's folder."""
    shutil.copytree(trained[0] / TINY["name"], tmp_path / TINY["name"])
    return tmp_path


def must_not_train(*args):
    raise AssertionError("the run trained although its input was refused")


class Started(Exception):
    """Raised by :class:`StopAtStart`."""


class StopAtStart(keras.callbacks.Callback):
    """Ends a run where training would begin: what was checked and cleaned before it is done."""

    def on_train_begin(self, logs=None):
        raise Started


def test_baselines_missing_a_task_metric_are_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "_run", must_not_train)
    semseg_only = write_results(tmp_path / "semseg.json", "semseg", {"semseg_miou": 0.3})
    message = rf"{re.escape(semseg_only)}.* no 'depth_rmse', the metric of task 'depth'"
    with pytest.raises(ValueError, match=message):
        run.train(tiny(tmp_path, baselines=semseg_only), verbose=0)
    zero = write_results(tmp_path / "z.json", "both", {"semseg_miou": 0.0, "depth_rmse": 1.0})
    with pytest.raises(ValueError, match=r"'semseg_miou' \(task 'semseg'\) as 0"):
        run.train(tiny(tmp_path, baselines=zero), verbose=0)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        run.train(tiny(tmp_path, baselines=str(tmp_path / "nowhere.json")), verbose=0)


def test_results_name_the_checkpoint_this_run_wrote(trained):
    root, summary = trained
    folder = root / TINY["name"]
    results = json.loads((folder / "results.json").read_text())
    assert (
        results["checkpoint"]
        == summary["checkpoint"]
        == str(folder / "checkpoints" / "last.weights.h5")
    )
    assert os.path.exists(results["checkpoint"])
    assert json.loads((folder / "recipe.json").read_text())["learning_rate"] == 0.05


def test_a_folder_of_other_settings_is_refused(trained, tmp_path):
    root = copy_of(trained, tmp_path)
    with pytest.raises(
        ResumeStateError,
        match=r"belongs to a run of 'checks' with other \['learning_rate'\].*delete .*run_dir",
    ):
        run.train(tiny(root, learning_rate=0.01), verbose=0, callbacks=[StopAtStart()])
    recorded = json.loads((root / TINY["name"] / "recipe.json").read_text())
    assert recorded["learning_rate"] == 0.05  # the folder still records its own run
    # output-only fields make no other run: the finished run is reported (not trained again),
    # and once it is not finished (no results.json) it starts again here
    same = tiny(root, image_summaries=1, export_version=3)
    assert run.train(same, callbacks=[StopAtStart()])["already_finished"]
    (root / TINY["name"] / "results.json").unlink()
    with pytest.raises(Started):
        run.train(same, callbacks=[StopAtStart()])


def poisoned_from(epoch: int, monkeypatch):
    """Make the training data's depth labels NaN at one pixel from epoch ``epoch`` (from 1)."""
    load_data = run.load_data

    def poison(images, labels):
        nan = tf.tensor_scatter_nd_update(tf.zeros_like(labels["depth"]), [[0, 0, 0, 0]], [np.nan])
        return images, {**labels, "depth": labels["depth"] + nan}

    def load(recipe):
        bundle = load_data(recipe)
        train = bundle.train.repeat(epoch - 1).concatenate(bundle.train.map(poison))
        return dataclasses.replace(bundle, train=train)

    monkeypatch.setattr(run, "load_data", load)


def test_nan_error_names_no_checkpoint_of_an_earlier_run(trained, tmp_path, monkeypatch):
    root = copy_of(trained, tmp_path)  # the checkpoint of an earlier run of the same settings,
    (root / TINY["name"] / "results.json").unlink()  # which did not finish (or it is reported)
    earlier = root / TINY["name"] / "checkpoints" / "last.weights.h5"
    poisoned_from(1, monkeypatch)
    with pytest.raises(NonFiniteLossError, match=r"\['depth'\].*not written a checkpoint") as err:
        run.train(tiny(root), verbose=0, export=False)
    assert "last good checkpoint" not in str(err.value) and str(earlier) not in str(err.value)


def test_nan_error_names_the_checkpoint_this_run_wrote(tmp_path, monkeypatch):
    poisoned_from(2, monkeypatch)
    recipe = tiny(tmp_path, epochs=2, steps_per_epoch=2)
    written = tmp_path / TINY["name"] / "checkpoints" / "last.weights.h5"
    with pytest.raises(
        NonFiniteLossError, match=f"last good checkpoint is kept at {re.escape(str(written))}"
    ):
        run.train(recipe, verbose=0, export=False)


def test_temporaries_of_interrupted_writers_are_removed_at_the_next_start(tmp_path):
    recipe = tiny(tmp_path)
    folder, export = tmp_path / TINY["name"], tmp_path / "exports" / TINY["name"]
    for sub in ("checkpoints", "backup"):
        os.makedirs(folder / sub)
    left = [  # the names the atomic writers use
        _readable_temp_file(str(folder / "checkpoints"), ".weights.h5"),  # AtomicCheckpoint
        _readable_temp_file(str(folder / "backup"), ".weights.h5"),  # TrainingBackup
        _readable_temp_file(str(folder), ".txt"),  # recipe.json
        str(folder / ".results.json.0f3a9c.tmp"),  # write_results
        str(export / ".tmp-1-k2j4h5"),  # export_saved_model's folder
    ]
    (folder / ".results.json.0f3a9c.tmp").write_text("{")
    os.makedirs(export / ".tmp-1-k2j4h5" / "variables")
    kept = [folder / "notes.txt", export / "1" / "saved_model.pb"]
    for path in kept:
        os.makedirs(path.parent, exist_ok=True)
        path.write_text("keep")
    with pytest.raises(Started):
        run.train(recipe, verbose=0, callbacks=[StopAtStart()])
    assert [p for p in left if os.path.exists(p)] == []
    assert all(p.exists() for p in kept)
    assert json.loads((folder / "recipe.json").read_text())["name"] == TINY["name"]


def test_a_run_that_trained_no_epoch_names_no_checkpoint(tmp_path):
    recipe = tiny(tmp_path)
    recipe.epochs = 0  # past Recipe's own check: the run loop must not name a checkpoint either
    summary = run.train(recipe, verbose=0, export=False)
    results = json.loads((tmp_path / TINY["name"] / "results.json").read_text())
    assert summary["checkpoint"] is None and results["checkpoint"] is None
