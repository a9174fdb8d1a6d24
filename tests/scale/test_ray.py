"""Ray Train launches: two Ray workers (1 CPU each, on a local cluster) run the project's
multi-worker path, one of them SIGKILLed at a random step, restarted by Ray and resumed from its
resume state, and end with the weights of one process training the same global batch on two
replicas (why two: `tests.scale.conftest.two_replicas_run`), for a gradient-level balancer (the
hardest case: per-task gradients all-reduced, a stateful and stochastic balancer); the run's
folder, TensorBoard logs and export are written once. Without Ray, the launcher says how to
install it.

Ray starts the same TF_CONFIG workers as tests/scale/test_multi_worker.py starts by hand, and
what a balancer of any level does on replicas is checked in process for every balancer
(tests/training/test_balancers_fit.py), so one Ray job is run: each costs about a minute.
"""

from __future__ import annotations

import glob
import os
import random
import re
import shutil
import sys
import tempfile

import numpy as np
import pytest

from mtl_keras import cli
from mtl_keras.training import ray_launcher
from tests.scale.conftest import ROOT, load_state, logged
from tests.scale.worker import KillOnce, SaveEachWorker, tiny_recipe

pytestmark = pytest.mark.large

#: TINY's gradient-level GradVac
GRADIENT_LEVEL = ()


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs whose workers import this checkout (and the tests)."""
    ray = pytest.importorskip("ray")
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, path) if p)
    temp = tempfile.mkdtemp(prefix="mtl-ray-test-")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        logging_config=ray.LoggingConfig(log_level="ERROR"),
        _system_config={"worker_niceness": 0},  # as train_on_ray's local cluster
        _temp_dir=temp,
    )
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    if path is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = path


def _recipe(root, overrides):
    return tiny_recipe([f"run_dir={root}/runs", f"export_dir={root}/exports", *overrides])


def _on_ray(root, overrides=(), callbacks=(), export=False):
    """Train on 2 Ray workers; returns (each worker's final state, the summary)."""
    states = root / "states"
    states.mkdir(parents=True, exist_ok=True)
    summary = ray_launcher.train_on_ray(
        _recipe(root, overrides),
        workers=2,
        cpus_per_worker=1,
        max_failures=2,
        verbose=0,
        export=export,
        callbacks=[SaveEachWorker(str(states)), *callbacks],
    )
    return [load_state(states / f"worker{i}.npz") for i in range(2)], summary


def _unnumbered(state: dict) -> dict:
    """Keys without Keras's per-process layer counters (``uncertainty_weighting_3_...``): the
    in-process run's counters depend on the layers earlier tests built."""
    return {re.sub(r"_\d+_", "_", k): v for k, v in state.items()}


def _assert_same_answer(on_ray, single):
    """Both Ray workers bit-identical, and equal to one process at the multi-worker test's
    tolerance."""
    on_ray = [_unnumbered(s) for s in on_ray]
    single = _unnumbered(single)
    assert sorted(on_ray[0]) == sorted(on_ray[1]) == sorted(single)
    for k in single:
        np.testing.assert_array_equal(on_ray[0][k], on_ray[1][k], err_msg=k)
        np.testing.assert_allclose(on_ray[0][k], single[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_a_killed_worker_is_restarted_and_the_run_resumes_to_the_one_process_weights(
    cluster, two_replicas_reference, tmp_path
):
    """A gradient-level balancer on Ray, with a worker SIGKILLed at a random step: Ray restarts
    the group, the run resumes from its last epoch's state, and both workers end with the weights
    of the uninterrupted one-process run on two replicas (at the multi-worker tolerance; a resume
    that repeated or skipped a step, or lost the optimizer's or balancer's state, lands far
    outside it). That a resumed run is bit for bit the uninterrupted one is
    tests/scale/test_resume.py's test."""
    pick = random.Random(os.urandom(8))
    worker, step = pick.randrange(2), pick.randint(1, 4)  # 2 epochs of 2 steps
    where = f"worker {worker} SIGKILLed after step {step}"
    marker = tmp_path / "killed"
    states, summary = _on_ray(
        tmp_path, GRADIENT_LEVEL, callbacks=[KillOnce(str(marker), worker, step)], export=True
    )
    assert marker.exists(), where
    assert summary["resumed_from_epoch"] == (step - 1) // 2, where
    assert summary["replicas"] == 2, where
    assert summary["metrics"] == pytest.approx(two_replicas_reference[1]["metrics"], rel=1e-3), (
        where
    )
    _assert_same_answer(states, two_replicas_reference[0])
    folder = tmp_path / "runs" / "scale"
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoints", "ray", "recipe.json", "results.json", "tensorboard",
    ], where  # fmt: skip
    assert os.listdir(folder / "checkpoints") == ["last.weights.h5"], where
    assert not glob.glob(str(tmp_path / "**" / ".tmp-*"), recursive=True), where
    exports = tmp_path / "exports" / "scale"
    assert os.listdir(exports) == ["1"] and (exports / "1" / "saved_model.pb").exists(), where
    assert summary["export"] == str(exports / "1"), where
    seen = logged(str(folder / "tensorboard"))
    assert seen and set(seen.values()) == {1}, f"{where}: {seen}"  # once, never twice
    for log in ("train", "validation"):
        steps = sorted(s for w, tag, s in seen if (w, tag) == (log, "epoch_loss"))
        assert steps == [0, 1], f"{where}: {log} {steps}"


def test_without_ray_the_launcher_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    with pytest.raises(ray_launcher.RayNotInstalledError, match=r'pip install "mtl_keras\[ray\]"'):
        ray_launcher.train_on_ray(tiny_recipe(), workers=2)


def test_requests_that_cannot_run_are_refused_before_ray_starts():
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        ray_launcher.train_on_ray(tiny_recipe(), workers=0)
    with pytest.raises(ValueError, match=r"batch_size=4 .* 3 replicas of 3 worker\(s\)"):
        ray_launcher.train_on_ray(tiny_recipe(), workers=3)


def test_the_command_line_passes_its_ray_options(monkeypatch, tmp_path, capsys):
    given = {}

    def fake(recipe, **kwargs):
        given.update(kwargs, strategy=recipe.strategy)
        return {"table": "(table)", "metrics": {}}

    monkeypatch.setattr(ray_launcher, "train_on_ray", fake)
    argv = ["train", "--recipe", "demo", "--set", f"run_dir={tmp_path}", "--launcher", "ray"]
    options = ["--workers", "4", "--ray-address", "auto", "--cpus-per-worker", "8"]
    options += ["--gpus-per-worker", "1", "--max-failures", "5", "--ray-storage", "s3://b/ray"]
    assert cli.main([*argv, *options, "--no-export"]) == 0
    assert given == {
        "workers": 4, "address": "auto", "cpus_per_worker": 8.0, "gpus_per_worker": 1.0,
        "max_failures": 5, "storage_path": "s3://b/ray", "verbose": 2, "export": False,
        "strategy": "default",
    }  # fmt: skip
    assert "(table)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "options, message",
    [
        (["--launcher", "ray"], "--launcher ray needs --workers N"),
        (["--workers", "2"], "--workers need --launcher ray"),
        (["--launcher", "ray", "--workers", "2", "--strategy", "mirrored"], "not 'mirrored'"),
    ],
)
def test_the_command_line_refuses_ray_options_that_do_not_fit(options, message, capsys):
    assert cli.main(["train", "--recipe", "demo", *options]) == cli.EXIT_REFUSED
    assert message in capsys.readouterr().err


def test_without_ray_the_command_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["train", "--recipe", "demo", "--set", f"run_dir={tmp_path}"]
    assert cli.main([*argv, "--launcher", "ray", "--workers", "2"]) == cli.EXIT_REFUSED
    assert "error: the ray launcher needs Ray Train" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing started
