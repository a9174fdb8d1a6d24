"""Multi-worker training launched as a Ray Train job: :func:`train_on_ray`.

Ray Train's ``TensorflowTrainer`` starts ``workers`` actors, sets ``TF_CONFIG`` in each, and each
runs :func:`~mtl_keras.training.run.train` with ``strategy="multi_worker"``: the same
``MultiWorkerMirroredStrategy`` path as workers started by hand, so the same recipe ends with
the same weights however it is launched. Ray adds the placement of the workers on a cluster and
restarts: when a worker dies (``FailureConfig(max_failures=...)``), Ray stops the others and starts
the group again, and the run resumes from its last resume state (end of the last complete epoch,
in the run folder, which must therefore be on storage all workers share).

The chief's summary comes back to the driver as the job's Ray checkpoint (a small folder), so
it reaches a driver that does not see the run folder. A restart after the run finished trains
nothing: the run reports its ``results.json``. The resume state notes the export once written,
so a restart between the export and ``results.json`` does not export twice, and TensorBoard
logs are rolled back to the resume state (:mod:`~mtl_keras.training.event_logs`), so no epoch
is logged twice.

Ray is an optional extra (``pip install "mtl_keras[ray]"``); it is imported only when a job starts.
Without an ``address`` a local Ray cluster with exactly the requested resources is started here
(its session files in a temporary folder) and shut down at the end. See ``docs/scale_out.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile

from mtl_keras.training.building import task_specs
from mtl_keras.training.cluster import parse_tf_config
from mtl_keras.training.recipe import Recipe
from mtl_keras.training.reports import read_baselines
from mtl_keras.training.resume import claim_run_folder

RAY_EXTRA = 'pip install "mtl_keras[ray]"'
SUMMARY_FILE = "summary.json"


class RayNotInstalledError(ImportError):
    """``--launcher ray`` without Ray Train installed."""


class RayJobError(RuntimeError):
    """The Ray Train job failed (all restarts used, or the cluster could not run it)."""


def import_ray():
    """``ray`` with Ray Train's TensorFlow support, or a :class:`RayNotInstalledError` saying how
    to install it."""
    try:
        import ray
        import ray.train.tensorflow  # noqa: F401
    except ImportError as err:
        raise RayNotInstalledError(
            f"the ray launcher needs Ray Train, which is not installed here ({err}); install the "
            f"pinned version with: {RAY_EXTRA} (or -c constraints.txt in a checkout), or train "
            "without --launcher ray"
        ) from None
    return ray


def _check_request(recipe: Recipe, workers, cpus, gpus, max_failures) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r} (e.g. --workers 2)")
    if not cpus > 0 or not gpus >= 0:
        raise ValueError(
            f"cpus_per_worker must be > 0 and gpus_per_worker >= 0, got {cpus!r} and {gpus!r} "
            "(e.g. --cpus-per-worker 4 --gpus-per-worker 1)"
        )
    if not isinstance(max_failures, int) or max_failures < -1:
        raise ValueError(
            f"max_failures must be an integer >= -1 (-1: no limit), got {max_failures}"
        )
    replicas = workers * max(1, math.floor(gpus))
    if recipe.batch_size % replicas:
        lower = max(replicas, recipe.batch_size - recipe.batch_size % replicas)
        raise ValueError(
            f"batch_size={recipe.batch_size} (the global batch) does not split evenly over the "
            f"{replicas} replicas of {workers} worker(s); use a multiple of {replicas}, e.g. "
            f"--set batch_size={lower} or {lower + replicas}"
        )


def _absolute(recipe: Recipe) -> Recipe:
    """The recipe with its folders made absolute, as seen from here: Ray starts workers in
    folders of its own (a worker also starts in this folder where it exists, for relative paths
    in other fields)."""
    fields = {
        k: os.path.abspath(getattr(recipe, k))
        for k in ("run_dir", "export_dir", "data_dir", "manual_dir")
        if getattr(recipe, k)
    }
    return dataclasses.replace(recipe, **fields)


def _start_cluster(ray, address, workers, cpus, gpus, temp_dir):
    """Connect to ``address``, or start a local cluster with the job's resources."""
    if address:
        return ray.init(address=address, logging_level="WARNING")
    ray.init(
        num_cpus=math.ceil(workers * cpus),
        num_gpus=None if gpus else 0,
        include_dashboard=False,
        logging_level="WARNING",
        # without the dashboard (not in ray[train]) Ray Train's placement-group cleaner warns
        # every 2 s that it cannot query actor states; Ray's own errors still show
        logging_config=ray.LoggingConfig(log_level="ERROR"),
        # Ray starts workers at niceness 15: on a machine shared with other work the training
        # would get the cores last; this cluster is the job's own
        _system_config={"worker_niceness": 0},
        _temp_dir=temp_dir,
    )
    have = ray.cluster_resources().get("GPU", 0)
    if gpus and have < workers * gpus:
        raise RayJobError(
            f"{workers} worker(s) x {gpus:g} GPU need {workers * gpus:g} GPUs, and this machine "
            f"has {have:g}; lower --workers or --gpus-per-worker, or give --ray-address of a "
            "cluster that has them"
        )


def _failure(err) -> Exception:
    """The error to raise on the driver: the workers' own error when each failed worker raised
    one (a refused input, a non-finite loss), else one naming the job's end and the way on."""
    failures = getattr(err, "worker_failures", None) or {}
    raised = [getattr(failures[r], "_base_exc", None) for r in sorted(failures)]
    if raised and all(isinstance(e, Exception) for e in raised):
        return raised[0]
    return RayJobError(
        f"the Ray Train job stopped ({' '.join(str(err).split())[:800]}); its resume state is "
        "kept: run the same command again to continue from the last complete epoch"
    )


def train_on_ray(
    recipe: Recipe,
    *,
    workers: int,
    address: str | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_failures: int = 3,
    storage_path: str | None = None,
    verbose: int | str = 2,
    export: bool = True,
    callbacks: list | None = None,
) -> dict:
    """Train ``recipe`` as a Ray Train job of ``workers`` MultiWorkerMirroredStrategy workers.

    Args:
        recipe: the experiment (its ``strategy`` is replaced by ``"multi_worker"``; relative
            folders are made absolute here, so on a remote cluster give paths its nodes share).
        workers: Ray workers (processes), each with ``TF_CONFIG`` from Ray.
        address: an existing cluster (``"auto"``, ``"ray://head:10001"``, ...); None starts a
            local cluster with ``workers * cpus_per_worker`` CPUs and stops it at the end.
        cpus_per_worker: CPUs reserved per worker (also its TensorFlow intra-op threads).
        gpus_per_worker: GPUs per worker; each becomes a replica of that worker.
        max_failures: restarts of the worker group after a worker failure (-1: no limit).
        storage_path: Ray Train's storage (a shared folder or an object-store URI such as
            ``s3://bucket/ray``); default ``<run folder>/ray``.
        verbose: Keras ``fit`` verbosity in the workers.
        export: write a SavedModel at the end (the chief, once).
        callbacks: extra Keras callbacks, pickled to every worker.

    Returns:
        The chief's summary, as :func:`~mtl_keras.training.run.train` returns it.

    Example:
        >>> train_on_ray(recipes.get("demo"), workers=2)  # doctest: +SKIP
    """
    _check_request(recipe, workers, cpus_per_worker, gpus_per_worker, max_failures)
    ray = import_ray()
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    recipe = _absolute(dataclasses.replace(recipe, strategy="multi_worker"))
    # refusals a restart would not cure, before any worker starts
    claim_run_folder(recipe, write=False)
    read_baselines(recipe, task_specs(recipe))
    temp_dir = None if address else tempfile.mkdtemp(prefix="mtl-ray-")
    started = not ray.is_initialized()
    try:
        if started:
            _start_cluster(ray, address, workers, cpus_per_worker, gpus_per_worker, temp_dir)
        resources = {
            "CPU": cpus_per_worker,
            **({"GPU": gpus_per_worker} if gpus_per_worker else {}),
        }
        trainer = TensorflowTrainer(
            _worker,
            train_loop_config={
                "recipe": recipe,
                "cwd": os.getcwd(),
                "threads": max(1, math.floor(cpus_per_worker)),
                "verbose": verbose,
                "export": export,
                "callbacks": list(callbacks or []),
            },
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=f"{recipe.name}-{os.urandom(4).hex()}",
                storage_path=storage_path or os.path.join(recipe.output_dir, "ray"),
                failure_config=FailureConfig(max_failures=max_failures),
                worker_runtime_env={"env_vars": _worker_environment()},
            ),
        )
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as err:
            raise _failure(err) from None
        with result.checkpoint.as_directory() as folder:
            with open(os.path.join(folder, SUMMARY_FILE)) as f:
                return json.load(f)
    finally:
        if started:
            ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _worker_environment() -> dict[str, str]:
    keep = ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH", "MTL_KERAS_DATA_DIR", "MTL_KERAS_MANUAL_DIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", **env}


def _worker(config: dict) -> None:
    """One Ray worker: the project's multi-worker run, with ``TF_CONFIG`` set by Ray."""
    # Ray's TensorFlow backend asks for tf.keras 2 (tf_keras); this project uses Keras 3
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    if os.path.isdir(config["cwd"]):
        os.chdir(config["cwd"])  # relative paths in the recipe's arguments, as on the driver
    import ray.train
    import tensorflow as tf

    from mtl_keras.training import run

    tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
    recipe = config["recipe"]
    # a restart after the run finished reports it (run.train reads its results.json)
    summary = run.train(
        recipe, verbose=config["verbose"], export=config["export"], callbacks=config["callbacks"]
    )
    with tempfile.TemporaryDirectory(prefix="mtl-ray-summary-") as folder:
        checkpoint = None
        if parse_tf_config(os.environ.get("TF_CONFIG")).is_chief:
            with open(os.path.join(folder, SUMMARY_FILE), "w") as f:
                json.dump(summary, f, default=str)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({"epochs": recipe.epochs}, checkpoint=checkpoint)
