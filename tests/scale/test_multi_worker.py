"""Two worker processes on 127.0.0.1 under MultiWorkerMirroredStrategy (from TF_CONFIG) end with
identical weights, equal to one process training the same global batch on two replicas (why two:
`tests.scale.conftest.two_replicas_run`); a missing worker fails fast with its address named.

Only GradVac (stochastic, stateful, per-task gradients of the shared variables all-reduced) runs
across processes here: every process costs seconds of TensorFlow start-up. That the 21 balancers
give on 2 replicas what they give on 1 device is checked in-process by
``tests/training/test_balancers_fit.py``; the multi-worker strategy runs the same replica-context
code with collectives that cross processes.
"""

import json
import time

import numpy as np
import pytest

from tests.scale.conftest import finish, free_ports, load_state, start, tf_config

pytestmark = pytest.mark.large


def test_two_workers_match_one_process(two_replicas_reference, tmp_path):
    ports = free_ports(2)
    outs = [str(tmp_path / f"worker{i}.npz") for i in range(2)]
    processes = [
        start(
            ["-m", "tests.scale.worker", outs[i], "strategy=multi_worker", "worker_timeout=60"],
            tmp_path,  # one shared run folder, as on a shared filesystem
            TF_CONFIG=tf_config(ports, i),
        )
        for i in range(2)
    ]
    for rc, log in finish(processes, timeout=400):
        assert rc == 0, log
    first, second = load_state(outs[0]), load_state(outs[1])
    single = two_replicas_reference[0]
    assert sorted(first) == sorted(second) == sorted(single)
    for k in single:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
        np.testing.assert_allclose(first[k], single[k], rtol=1e-4, atol=1e-5, err_msg=k)
    summaries = [json.loads(open(o + ".json").read()) for o in outs]
    assert [s["replicas"] for s in summaries] == [2, 2]
    assert summaries[0]["metrics"] == pytest.approx(two_replicas_reference[1]["metrics"], rel=1e-3)
    # only the chief (worker 0) wrote the run folder; the resume state was removed at the end
    assert summaries[0]["checkpoint"] and summaries[1]["checkpoint"] is None
    assert sorted(p.name for p in (tmp_path / "runs" / "scale").iterdir()) == [
        "checkpoints",
        "recipe.json",
        "results.json",
        "tensorboard",
    ]


def test_unreachable_worker_fails_fast_naming_it(tmp_path):
    ports = free_ports(2)  # nobody will listen on the second port
    started = time.monotonic()
    command = ["-m", "mtl_keras.cli", "train", "--recipe", "demo", "--strategy", "multi_worker"]
    process = start(
        [*command, "--set", "worker_timeout=2"], tmp_path, TF_CONFIG=tf_config(ports, 0)
    )
    ((rc, log),) = finish([process], timeout=120)
    assert rc == 2, log
    assert (
        f"error: worker 0 (127.0.0.1:{ports[0]}) could not reach worker 1 (127.0.0.1:{ports[1]}) "
        "within worker_timeout=2 s"
    ) in log
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()  # failed before touching anything
