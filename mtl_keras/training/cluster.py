"""``TF_CONFIG``, validated: the cluster a ``MultiWorkerMirroredStrategy`` run trains on.

:func:`parse_tf_config` turns the environment variable's JSON into a :class:`ClusterConfig` (the
training jobs' addresses and this process's task) or fails with a :class:`ClusterConfigError`
that names what is missing or wrong and what was expected.
"""

from __future__ import annotations

import dataclasses
import json

#: Jobs of a MultiWorkerMirroredStrategy cluster, in task order (a chief, if any, comes first).
TRAINING_JOBS = ("chief", "worker")

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` is missing or does not describe a usable cluster."""


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The parts of ``TF_CONFIG`` a multi-worker run uses.

    Attributes:
        jobs: addresses (``host:port``) of each training job, e.g. ``{"worker": (a, b)}``.
        task_type: this process's job (``"chief"`` or ``"worker"``).
        task_index: this process's index within its job.
    """

    jobs: dict[str, tuple[str, ...]]
    task_type: str
    task_index: int

    @property
    def tasks(self) -> list[tuple[str, int, str]]:
        """``(job, index, address)`` of every training task, chief first."""
        return [(j, i, a) for j in TRAINING_JOBS for i, a in enumerate(self.jobs.get(j, ()))]

    @property
    def num_workers(self) -> int:
        return len(self.tasks)

    @property
    def is_chief(self) -> bool:
        """The chief if there is one, else worker 0: the process that writes files."""
        first_job = self.tasks[0][0]
        return self.task_type == first_job and self.task_index == 0

    @property
    def leader(self) -> str:
        """TF device name of the task hosting the coordination service."""
        job, index, _ = self.tasks[0]
        return f"/job:{job}/replica:0/task:{index}"

    def address_of(self, job: str, index: int) -> str:
        return self.jobs[job][index]


def _check_address(job: str, i: int, address) -> str:
    where = f'TF_CONFIG cluster["{job}"][{i}]'
    if not isinstance(address, str) or address.count(":") < 1:
        raise ClusterConfigError(
            f"{where} is {address!r}; expected a 'host:port' string such as '10.0.0.2:12345'"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(
            f"{where} is {address!r}; expected 'host:port' with a port between 1 and 65535"
        )
    return address


def parse_tf_config(raw: str | None) -> ClusterConfig:
    """Validate a ``TF_CONFIG`` value for ``MultiWorkerMirroredStrategy``.

    Args:
        raw: the JSON text of ``TF_CONFIG`` (``None`` or empty when the variable is unset).

    Returns:
        the cluster's training jobs and this process's task.

    Raises:
        ClusterConfigError: naming what is missing or wrong and what was expected.

    Example:
        >>> c = parse_tf_config(
        ...     '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}'
        ... )
        >>> c.num_workers, c.is_chief
        (2, False)
    """
    if not raw or not raw.strip():
        raise ClusterConfigError(
            "strategy 'multi_worker' needs the TF_CONFIG environment variable on every worker, "
            f"e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (same cluster everywhere, each worker its own "
            "index); use --set strategy=mirrored for one machine"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ClusterConfigError(
            f"TF_CONFIG is not valid JSON ({err}); expected e.g. {TF_CONFIG_EXAMPLE}"
        ) from None
    if not isinstance(config, dict):
        raise ClusterConfigError(
            f"TF_CONFIG must be a JSON object, got {type(config).__name__}; expected e.g. "
            f"{TF_CONFIG_EXAMPLE}"
        )
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterConfigError(
            f"TF_CONFIG has no 'cluster' object (got {cluster!r}); expected e.g. "
            f"{TF_CONFIG_EXAMPLE}"
        )
    other = sorted(set(cluster) - set(TRAINING_JOBS))
    if other:
        raise ClusterConfigError(
            f"TF_CONFIG cluster has job(s) {other}; MultiWorkerMirroredStrategy trains with "
            f"'chief' and 'worker' jobs only (no parameter servers or evaluators): remove them"
        )
    jobs = {}
    for job in TRAINING_JOBS:
        if job not in cluster:
            continue
        addresses = cluster[job]
        if not isinstance(addresses, list) or not addresses:
            raise ClusterConfigError(
                f'TF_CONFIG cluster["{job}"] must be a non-empty list of "host:port" strings, '
                f"got {addresses!r}"
            )
        jobs[job] = tuple(_check_address(job, i, a) for i, a in enumerate(addresses))
    if len(jobs.get("chief", ())) > 1:
        raise ClusterConfigError(
            f"TF_CONFIG has {len(jobs['chief'])} chiefs; a cluster has at most one chief"
        )
    everything = [a for addresses in jobs.values() for a in addresses]
    repeated = sorted({a for a in everything if everything.count(a) > 1})
    if repeated:
        raise ClusterConfigError(
            f"TF_CONFIG lists address(es) {repeated} more than once; every task needs its own "
            "host:port"
        )
    if not isinstance(task, dict):
        raise ClusterConfigError(
            f"TF_CONFIG has no 'task' object (got {task!r}); every worker needs its own, e.g. "
            '"task": {"type": "worker", "index": 0}'
        )
    task_type, index = task.get("type"), task.get("index")
    if task_type not in jobs:
        raise ClusterConfigError(
            f"TF_CONFIG task type is {task_type!r} but the cluster has jobs {sorted(jobs)}; "
            "set task.type to one of them"
        )
    if (
        isinstance(index, bool)
        or not isinstance(index, int)
        or not 0 <= index < len(jobs[task_type])
    ):
        raise ClusterConfigError(
            f"TF_CONFIG task index is {index!r} but job {task_type!r} has "
            f"{len(jobs[task_type])} task(s); use an integer from 0 to {len(jobs[task_type]) - 1}"
        )
    return ClusterConfig(jobs, task_type, index)
