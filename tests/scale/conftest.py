"""Shared pieces of the scale-out tests: free ports, worker subprocesses, a reference run."""

from __future__ import annotations

import collections
import glob
import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from mtl_keras.training import run
from tests.scale import worker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index: int) -> str:
    return json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TPU_NAME")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def start(args, cwd, **env) -> subprocess.Popen:
    """Start ``python *args`` in ``cwd`` (output collected; the test process owns it)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=subprocess_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(processes, timeout: float) -> list[tuple[int, str]]:
    """Wait for every process (hard deadline: SIGKILL all of them); return (rc, output) each."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in processes:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, out))
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
        outputs = [p.communicate()[0] for p in processes]
        pytest.fail(f"subprocess(es) still running after {timeout} s; output:\n" + outputs[0])
    return results


def run_worker(cwd, out, overrides=(), timeout=240, **env) -> tuple[int, str]:
    """``python -m tests.scale.worker out overrides...`` to completion."""
    return finish([start(["-m", "tests.scale.worker", out, *overrides], cwd, **env)], timeout)[0]


def load_state(path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def logged(folder) -> collections.Counter:
    """How often each ``(log folder, tag, step)`` was written under the TensorBoard folder
    ``folder``; reading an event file that ends in half a record fails."""
    import tensorflow as tf

    seen = collections.Counter()
    for path in glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True):
        where = os.path.relpath(os.path.dirname(path), folder)
        for event in tf.compat.v1.train.summary_iterator(path):
            seen.update((where, v.tag, event.step) for v in event.summary.value)
    return seen


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The tiny recipe trained here, in one process, uninterrupted: (final state, summary)."""
    root = tmp_path_factory.mktemp("reference")
    state = {}

    class Grab(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            state.update(worker.final_state(self.model))

    recipe = worker.tiny_recipe([f"run_dir={root}"])
    summary = run.train(recipe, verbose=0, export=False, callbacks=[Grab()])
    return state, summary


def two_replicas_run(root, overrides=()) -> tuple[dict[str, np.ndarray], dict]:
    """The tiny recipe (with ``overrides``) trained by one process on 2 replicas (two logical
    CPUs, ``strategy=mirrored``): (final state, summary).

    Worker processes are compared with this run, not with the one-device run, because the two
    differ by more than float rounding after a few steps, on some CPUs. Splitting the batch over
    two replicas changes how the convolutions round (about 1e-7 after each of the first three
    steps). On the Xeon (AVX-512, AMX) this was measured on, the weights then jump to 1e-4 apart
    at step 4 with the losses still equal to 1e-7: most likely a ReLU or max-pool input near its
    kink crossed it. Two worker processes end within 1.2e-7 of this run (GradVac and
    uncertainty). That one device and two replicas take the same step is checked step by step,
    in process, by tests/training/test_balancers_fit.py and tests/training/test_model.py.
    """
    os.makedirs(root, exist_ok=True)
    out = os.path.join(str(root), "two_replicas.npz")
    rc, log = run_worker(
        root,
        out,
        ["strategy=mirrored", f"run_dir={root}/runs", *overrides],
        MTL_KERAS_TEST_LOGICAL_CPUS="2",
    )
    assert rc == 0, log
    with open(out + ".json") as f:
        summary = json.load(f)
    assert summary["replicas"] == 2, summary
    return load_state(out), summary


@pytest.fixture(scope="session")
def two_replicas_reference(tmp_path_factory):
    """:func:`two_replicas_run` of the tiny recipe as it is."""
    return two_replicas_run(tmp_path_factory.mktemp("two_replicas"))
