"""What a run leaves and what a rerun does: a finished run is reported, not trained again; an
interrupted one resumes; --new-run trains in a new run folder; the TensorBoard logs carry the
recipe's HParams and final metrics; the end of `mtl-keras train` says where everything went;
evaluate prints the baselines; a SavedModel names its tasks and classes and serves empty batches."""

import contextlib
import glob
import io
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hparams_metadata

from mtl_keras.cli import main
from mtl_keras.export import export_saved_model
from mtl_keras.metrics import write_results
from mtl_keras.tasks import resolve
from mtl_keras.training import resume, run
from mtl_keras.training.recipe import Recipe
from tests.utils import TINY_RECIPE, micro_network

TINY = {**TINY_RECIPE, "jit_compile": False}


def settings(root, **more) -> list[str]:
    """``--set`` arguments giving the demo recipe TINY's settings and folders in ``root``."""
    values = {**TINY, "run_dir": f"{root}/runs", "export_dir": f"{root}/exports", **more}
    return [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def train_cli(root, *extra: str) -> str:
    """``mtl-keras train --recipe demo`` with :func:`settings`; its stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--recipe", "demo", "--quiet", *settings(root), *extra]) == 0
    return out.getvalue()


def event_files(folder) -> dict[str, int]:
    """``{path: size}`` of every TensorBoard event file under ``folder``."""
    pattern = os.path.join(glob.escape(str(folder)), "**", "events.out.tfevents.*")
    return {p: os.path.getsize(p) for p in glob.glob(pattern, recursive=True)}


def snapshot(root) -> dict:
    run_folder = root / "runs" / "demo"
    return {
        "events": event_files(run_folder),
        "exports": sorted(os.listdir(root / "exports" / "demo")),
        "checkpoint": os.stat(run_folder / "checkpoints" / "last.weights.h5").st_mtime_ns,
    }


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The demo recipe trained and exported by the CLI, started again, then with --new-run:
    ``(root, {step: (stdout, files after it)})``."""
    root = tmp_path_factory.mktemp("runs")
    steps = {}
    for step, extra in (("first", ()), ("again", ()), ("new", ("--new-run",))):
        stdout = train_cli(root, *extra)
        steps[step] = stdout, snapshot(root)
    return root, steps


def test_train_ends_by_saying_where_everything_went(cli_runs):
    root, steps = cli_runs
    stdout, _ = steps["first"]
    folder = f"{root}/runs/demo"
    assert f"run folder:   {folder}\n" in stdout
    assert f"TensorBoard:  tensorboard --logdir {folder}  (every run, HParams table: " in stdout
    assert f"results:      {folder}/results.json\n" in stdout
    assert f"checkpoint:   {folder}/checkpoints/last.weights.h5\n" in stdout
    assert f"export:       {root}/exports/demo/1\n" in stdout
    results = json.loads((root / "runs" / "demo" / "results.json").read_text())
    assert results["export"] == f"{root}/exports/demo/1"  # results.json names the export


def test_a_finished_run_is_reported_not_trained_again(cli_runs):
    root, steps = cli_runs
    stdout, files = steps["again"]
    assert "holds a finished run of 'demo': it is reported, not trained or exported" in stdout
    assert '"already_finished": true' in stdout and re.search(r"\nsemseg +miou +0\.\d{4}", stdout)
    assert f"export:       {root}/exports/demo/1\n" in stdout
    assert files == steps["first"][1]  # no new curves, checkpoint or export version


def test_new_run_trains_in_its_own_folder_and_exports_the_next_version(cli_runs):
    root, steps = cli_runs
    stdout, files = steps["new"]
    assert files["exports"] == ["1", "2"]
    assert files["events"] == steps["first"][1]["events"]  # the first run's logs untouched
    second = root / "runs" / "demo-2"
    assert f"run folder:   {second}\n" in stdout and "already_finished" not in stdout
    assert json.loads((second / "results.json").read_text())["export"].endswith("/demo/2")
    assert json.loads((second / "recipe.json").read_text())["run_name"] == "demo-2"
    assert any("/train/" in p for p in event_files(second / "tensorboard"))
    # export (and evaluate) find that run by its folder's name
    assert main(["export", "--recipe", "demo", *settings(root, run_name="demo-2")]) == 0
    assert sorted(os.listdir(root / "exports" / "demo")) == ["1", "2", "3"]


def _hparams_sessions(values) -> list:
    """The HParams session-start records among summary ``values``."""
    return [
        hparams_metadata.parse_session_start_info_plugin_data(v.metadata.plugin_data.content)
        for v in values
        if v.metadata.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME
        and v.tag == hparams_metadata.SESSION_START_INFO_TAG
    ]


def _root_events(folder):
    """The summaries written in ``folder`` itself (not its train/ and validation/ subfolders)."""
    for path in sorted(glob.glob(os.path.join(glob.escape(str(folder)), "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            yield from event.summary.value


def test_tensorboard_logs_hold_the_hparams_and_final_metrics(cli_runs):
    root, _ = cli_runs
    values = list(_root_events(root / "runs" / "demo" / "tensorboard"))
    starts = _hparams_sessions(values)
    assert len(starts) == 1  # once per run, not again when it is reported
    hparams = starts[0].hparams
    assert hparams["balancer"].string_value == "fixed"
    assert hparams["architecture"].string_value == "hard_sharing"
    assert hparams["backbone"].string_value == "resnet10"
    assert hparams["batch_size"].number_value == 4 and hparams["epochs"].number_value == 1
    assert json.loads(hparams["tasks"].string_value) == ["semseg", "depth"]
    assert "run_dir" not in hparams and "export_dir" not in hparams  # output-only fields
    final = {v.tag: float(tf.make_ndarray(v.tensor)) for v in values if v.tag.startswith("final/")}
    metrics = json.loads((root / "runs" / "demo" / "results.json").read_text())["metrics"]
    assert final == pytest.approx({f"final/{k}": v for k, v in metrics.items()})


def test_evaluate_prints_the_trivial_and_single_task_baselines(cli_runs, capsys):
    root, _ = cli_runs
    base = write_results(root / "single.json", "both", {"semseg_miou": 0.5, "depth_rmse": 2.0})
    assert main(["evaluate", "--recipe", "demo", *settings(root), "--baselines", base]) == 0
    table = capsys.readouterr().out.split("\n{")[0]
    assert table.splitlines()[0].split() == ["task", "metric", "model", "baseline", "single-task",
                                             "better"]  # fmt: skip
    rows = {tuple(line.split()[:2]): line.split() for line in table.splitlines()[1:]}
    assert rows[("semseg", "miou")][4] == "0.5000" and rows[("depth", "rmse")][4] == "2.0000"
    assert rows[("semseg", "pixel_acc")][4] == "-"  # no single-task value for it
    assert all(row[3] != "-" for row in rows.values())  # the trivial baseline of every metric
    written = json.loads((root / "runs" / "demo" / "eval.json").read_text())
    assert set(written["trivial_baseline"]) >= {"semseg_miou", "depth_rmse"}


class Interrupted(Exception):
    """Raised by :class:`StopAtSecondEpoch`."""


class StopAtSecondEpoch(keras.callbacks.Callback):
    """A run killed after its first epoch (its resume state written)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise Interrupted


class MustNotTrain(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise AssertionError("a finished run trained again")


def test_an_interrupted_run_resumes_then_is_reported(tmp_path):
    recipe = Recipe(name="r", run_dir=str(tmp_path), **{**TINY, "epochs": 2})
    with pytest.raises(Interrupted):
        run.train(recipe, verbose=0, export=False, callbacks=[StopAtSecondEpoch()])
    assert resume.finished_summary(recipe) is None
    summary = run.train(recipe, verbose=0, export=False)  # the same call again: it resumes
    assert summary["resumed_from_epoch"] == 1 and "already_finished" not in summary
    again = run.train(recipe, verbose=0, export=False, callbacks=[MustNotTrain()])
    assert again["already_finished"] and again["metrics"] == summary["metrics"]
    assert again["table"] == summary["table"]
    # the HParams were written when the run started, not again when it resumed
    assert len(_hparams_sessions(_root_events(tmp_path / "r" / "tensorboard"))) == 1


def test_new_run_picks_the_next_folder_or_the_unfinished_newest(tmp_path):
    recipe = Recipe(name="r", run_dir=str(tmp_path), **TINY)
    assert resume.new_run(recipe).output_dir == f"{tmp_path}/r"  # no run yet: its own name
    resume.claim_run_folder(recipe, write=True)
    (tmp_path / "r" / "results.json").write_text('{"task": "r", "metrics": {}}')
    second = resume.new_run(recipe)
    assert second.run_name == "r-2" and resume.fingerprint(second) == resume.fingerprint(recipe)
    resume.claim_run_folder(second, write=True)  # started, not finished: the same command resumes
    assert resume.new_run(recipe).run_name == "r-2"
    other = Recipe(name="r", run_dir=str(tmp_path), **{**TINY, "seed": 1})
    assert resume.new_run(other).run_name == "r-3"  # r-2 is a run of other settings
    with pytest.raises(ValueError, match="recipe field run_name must be .* without '/'"):
        Recipe(name="r", run_name="a/b")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A micro network exported with semseg's class names unknown (generic) and human parts'."""
    root = tmp_path_factory.mktemp("exports")
    keras.utils.set_random_seed(0)
    tasks = ("semseg", "depth", "human_parts")
    specs = resolve(tasks, {"semseg": {"num_classes": 5}})  # as the network, no class_names
    network = micro_network(tasks)
    return specs, export_saved_model(network, specs, str(root), "micro", image_size=(16, 16))


def test_saved_model_names_its_tasks_and_classes(exported):
    specs, path = exported
    assert sorted(os.listdir(os.path.dirname(path))) == ["1"]  # atomic: nothing temporary left
    assets = os.path.join(path, "assets")
    assert sorted(os.listdir(assets)) == [
        "human_parts_class_names.txt",
        "semseg_class_names.txt",
        "tasks.txt",
    ]
    with open(os.path.join(assets, "tasks.txt")) as f:
        assert f.read().splitlines() == ["semseg", "depth", "human_parts"]
    metadata = tf.saved_model.load(path).signatures["metadata"]()
    names = {k: [s.decode() for s in v.numpy()] for k, v in metadata.items()}
    assert names["tasks"] == ["semseg", "depth", "human_parts"]
    assert names["semseg_class_names"] == [f"class_{i}" for i in range(5)]
    assert names["human_parts_class_names"] == list(specs["human_parts"].class_names)
    assert names["generic_class_names"] == ["semseg"]  # the dataset named none of its classes


def test_an_empty_batch_returns_empty_outputs(exported):
    _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    empty = serve(images=tf.zeros([0, 20, 24, 3], tf.uint8))
    full = serve(images=tf.zeros([2, 20, 24, 3], tf.uint8))
    assert set(empty) == set(full)
    for key, value in empty.items():
        assert value.shape == (0, *full[key].shape[1:]) and value.dtype == full[key].dtype, key
    assert full["semseg_probs"].shape == (2, 20, 24, 5)
    np.testing.assert_allclose(tf.reduce_sum(full["semseg_probs"], -1).numpy(), 1.0, atol=1e-5)
