"""Strategy choice and bad input under scale: TF_CONFIG validation, batch sizes that do not split
over the replicas, unknown strategies or precisions, a missing TPU."""

import json

import pytest
import tensorflow as tf

from mtl_keras.cli import main
from mtl_keras.training import distribute
from mtl_keras.training.cluster import ClusterConfigError, parse_tf_config
from mtl_keras.training.recipe import Recipe
from tests.utils import two_replicas

GOOD = {"cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}, "task": {"type": "worker"}}


def _config(**changes):
    config = json.loads(json.dumps(GOOD))
    config["task"]["index"] = 1
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = config
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return json.dumps(config)


def test_parse_a_good_cluster():
    c = parse_tf_config(_config())
    assert (c.num_workers, c.task_type, c.task_index, c.is_chief) == (2, "worker", 1, False)
    assert c.leader == "/job:worker/replica:0/task:0"
    chief = parse_tf_config(
        json.dumps(
            {
                "cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                "task": {"type": "chief", "index": 0},
            }
        )
    )
    assert (
        chief.is_chief and chief.num_workers == 2 and chief.leader == "/job:chief/replica:0/task:0"
    )


@pytest.mark.parametrize(
    "raw,message",
    [
        (None, r"needs the TF_CONFIG environment variable"),
        ("{cluster", r"TF_CONFIG is not valid JSON"),
        ("[1, 2]", r"must be a JSON object, got list"),
        (_config(cluster=None), r"has no 'cluster' object"),
        (_config(**{"cluster.ps": ["h:1"]}), r"job\(s\) \['ps'\].*'chief' and 'worker' jobs only"),
        (_config(**{"cluster.worker": []}), r'cluster\["worker"\] must be a non-empty list'),
        (
            _config(**{"cluster.worker": ["h:1", "nohost"]}),
            r'cluster\["worker"\]\[1\] is \'nohost\'',
        ),
        (_config(**{"cluster.worker": ["h:1", "h:99999"]}), r"port between 1 and 65535"),
        (_config(**{"cluster.worker": ["h:1", "h:1"]}), r"\['h:1'\] more than once"),
        (_config(task=None), r"has no 'task' object"),
        (_config(**{"task.type": "evaluator"}), r"task type is 'evaluator'.*jobs \['worker'\]"),
        (_config(**{"task.index": 2}), r"task index is 2 but job 'worker' has 2 task\(s\).*0 to 1"),
        (_config(**{"task.index": "0"}), r"task index is '0'"),
    ],
)
def test_wrong_tf_config_names_the_problem(raw, message):
    with pytest.raises(ClusterConfigError, match=message):
        parse_tf_config(raw)


def test_cli_reports_a_wrong_tf_config(monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h:1"]}, "task": {"index": 0}}')
    assert main(["train", "--recipe", "demo", "--strategy", "multi_worker"]) == 2
    err = capsys.readouterr().err
    assert "error: TF_CONFIG task type is None but the cluster has jobs ['worker']" in err


def test_batch_not_divisible_by_replicas():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPUs (tests/conftest.py)")
    strategy = two_replicas()
    distribute.check_batch_size(4, strategy)
    with pytest.raises(
        ValueError,
        match=r"batch_size=5 .* does not split evenly over the 2 replicas of this "
        r"MirroredStrategy; use a multiple of 2, e\.g\. --set batch_size=4 or 6",
    ):
        distribute.check_batch_size(5, strategy)


def test_unknown_strategy_precision_and_missing_tpu(monkeypatch):
    with pytest.raises(ValueError, match="unknown strategy 'horovod'; valid: default, mirrored"):
        Recipe(name="r", strategy="horovod")
    with pytest.raises(ValueError, match="unknown precision 'float16'; valid: float32, mixed_"):
        Recipe(name="r", precision="float16")
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        distribute.make_strategy("nope")
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="strategy 'tpu' found no TPU.*TPU_NAME"):
        distribute.make_strategy("tpu")


def test_workarounds_are_inert_off_multi_worker():
    logs = {"loss": tf.constant(1.0)}
    assert distribute.reducible_logs(logs) is logs
    assert not distribute.is_multi_worker()
    assert distribute.is_chief()
