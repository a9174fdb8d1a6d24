"""Distribution strategies chosen by name, and two Keras workarounds.

``make_strategy(name)`` builds one of :data:`STRATEGIES`:

* ``"default"``: the current (no-op) strategy, one device.
* ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over the local GPUs (or the CPU).
* ``"multi_worker"``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the workers of the
  ``TF_CONFIG`` environment variable. The variable is validated first
  (:func:`~mtl_keras.training.cluster.parse_tf_config`: a wrong one fails with a message naming
  the problem) and the start-up waits at most ``worker_timeout`` seconds for every worker to
  register, so an unreachable worker fails fast instead of hanging.
* ``"tpu"``: ``tf.distribute.TPUStrategy`` on the TPU named by the ``TPU_NAME`` environment
  variable (or the local one); see ``docs/scale_out.md``.

:func:`training_stream` is the training data ``fit`` consumes: under a multi-worker strategy
each worker decodes only its share of every global batch.

Keras 3.15 needs two small workarounds under ``MultiWorkerMirroredStrategy`` (build the optimizer
in the scope and skip ``fit``'s symbolic build; give step logs shape ``[1]``); they are the named
functions at the end of this module, guarded by :data:`NEEDS_MULTI_WORKER_WORKAROUNDS` and
exercised by the two-process test in ``tests/scale``.
"""

from __future__ import annotations

import os
import re

import keras
import tensorflow as tf

from mtl_keras.training.cluster import ClusterConfig, parse_tf_config

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


#: True for the Keras releases measured to need the multi-worker workarounds (3.15.1). On a newer
#: Keras they are skipped; ``tests/scale/test_multi_worker.py`` then tells whether that is right.
NEEDS_MULTI_WORKER_WORKAROUNDS = _version(keras.__version__)[:2] <= (3, 15)


class WorkerTimeoutError(RuntimeError):
    """Some worker of the cluster did not register within the timeout."""


class WorkerLostError(RuntimeError):
    """A worker stopped (crashed, was killed or preempted) during multi-worker training."""


def _configure_coordination(cluster: ClusterConfig, timeout: float) -> None:
    """Make start-up wait at most ``timeout`` s for every task to register, then fail."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    ctx = context.context()
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=cluster.leader,
        cluster_register_timeout_in_ms=int(timeout * 1000),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(addresses))
            for job, addresses in cluster.jobs.items()
        ],
    )
    # without the barrier only the leader's registration is bounded; with it every task fails
    # with DeadlineExceeded when a peer is missing
    ctx.coordination_service.cluster_register_with_barrier = True


def _missing_tasks(message: str, cluster: ClusterConfig) -> list[str]:
    names = []
    for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", message):
        if job in cluster.jobs and int(index) < len(cluster.jobs[job]):
            name = f"{job} {index} ({cluster.address_of(job, int(index))})"
            if (job, int(index)) != (cluster.task_type, cluster.task_index) and name not in names:
                names.append(name)
    return names


def multi_worker_strategy(
    tf_config: str | None = None, *, worker_timeout: float = 120.0
) -> tf.distribute.MultiWorkerMirroredStrategy:
    """``MultiWorkerMirroredStrategy`` from a validated ``TF_CONFIG``, failing fast.

    Create it before any other TensorFlow operation runs in the process (TensorFlow's rule).

    Args:
        tf_config: the ``TF_CONFIG`` text (default: the environment variable).
        worker_timeout: seconds to wait for every worker to register.

    Raises:
        ClusterConfigError: ``TF_CONFIG`` is missing or wrong.
        WorkerTimeoutError: a worker did not register within ``worker_timeout`` seconds.
    """
    raw = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    cluster = parse_tf_config(raw)
    if worker_timeout <= 0:
        raise ValueError(f"worker_timeout must be > 0 seconds, got {worker_timeout}")
    _configure_coordination(cluster, worker_timeout)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({j: list(a) for j, a in cluster.jobs.items()}),
        task_type=cluster.task_type,
        task_id=cluster.task_index,
        rpc_layer="grpc",
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as err:
        missing = _missing_tasks(str(err), cluster) or [
            f"{j} {i} ({a})"
            for j, i, a in cluster.tasks
            if (j, i) != (cluster.task_type, cluster.task_index)
        ]
        raise WorkerTimeoutError(
            f"{cluster.task_type} {cluster.task_index} "
            f"({cluster.address_of(cluster.task_type, cluster.task_index)}) could not reach "
            f"{', '.join(missing)} within worker_timeout={worker_timeout:g} s. Start every "
            "worker of TF_CONFIG with the same cluster and its own task index, check that the "
            "addresses are reachable from here (host names, ports, firewalls), or raise the "
            "timeout (--set worker_timeout=600) when workers start far apart."
        ) from None


def tpu_strategy() -> tf.distribute.TPUStrategy:
    """``TPUStrategy`` on the TPU named by ``TPU_NAME`` (the local TPU when unset)."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", "")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"strategy 'tpu' found no TPU ({first}); run on a TPU VM or set TPU_NAME to the "
            "TPU's name or grpc:// address, or choose --set strategy=default|mirrored"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str, *, worker_timeout: float = 120.0) -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of :data:`STRATEGIES`).

    Args:
        name: ``"default"``, ``"mirrored"``, ``"multi_worker"`` or ``"tpu"``.
        worker_timeout: for ``"multi_worker"``, seconds to wait for every worker at start-up.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return multi_worker_strategy(worker_timeout=worker_timeout)
    if name == "tpu":
        return tpu_strategy()
    raise ValueError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}")


def is_multi_worker(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True under a MultiWorkerMirroredStrategy spanning more than one worker."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)()
    )


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run's files (always, except on non-chief workers)."""
    strategy = strategy or tf.distribute.get_strategy()
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """Fail unless the global batch splits evenly over the strategy's replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size < 1 or batch_size % replicas:
        lower = max(replicas, batch_size - batch_size % replicas)
        raise ValueError(
            f"batch_size={batch_size} (the global batch) does not split evenly over the "
            f"{replicas} replicas of this {type(strategy).__name__}; use a multiple of "
            f"{replicas}, e.g. --set batch_size={lower} or {lower + replicas}"
        )


def training_stream(bundle, strategy: tf.distribute.Strategy, skip_batches: int = 0):
    """The endless, seeded stream of global training batches ``fit`` consumes, after
    ``skip_batches`` batches (the epochs a resumed run has already trained).

    Under a multi-worker strategy, with a bundle whose training split is a
    :class:`~mtl_keras.data.sharding.ShardableSplit`, every worker decodes only the examples of
    its own replicas (``distribute_datasets_from_function`` over
    :meth:`~mtl_keras.data.sharding.ShardableSplit.worker_stream`): exactly what
    ``tf.distribute`` would have handed them from the whole pipeline, which every worker would
    otherwise decode in full. Anywhere else the whole pipeline is returned, and ``fit`` splits
    its batches over the replicas of this process.

    Args:
        bundle: a :class:`~mtl_keras.data.DataBundle`.
        strategy: the run's strategy.
        skip_batches: global batches to skip.
    """
    split = getattr(bundle, "train_split", None)
    if split is None or not is_multi_worker(strategy):
        return bundle.train.repeat().skip(skip_batches)

    def share(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return split.worker_stream(
            context.num_input_pipelines,
            context.input_pipeline_id,
            replicas_per_worker=context.num_replicas_in_sync // context.num_input_pipelines,
            skip_batches=skip_batches,
        )

    return strategy.distribute_datasets_from_function(share)


# ---------------------------------------------------------------------- Keras 3.15 workarounds
def build_optimizer_in_scope(model: keras.Model) -> None:
    """Workaround 1, part 1: create the optimizer's variables now, inside the strategy scope.

    Keras 3.15 otherwise builds the optimizer in ``fit``'s symbolic build, which fails under
    ``MultiWorkerMirroredStrategy`` (see :func:`symbolic_build_needed`), or lazily inside the
    distributed step, where variables cannot be created. Building it early is also what lets a
    resume state (optimizer moments included) be loaded before ``fit``, so
    :func:`mtl_keras.training.building.build_model` calls it on every Keras version.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def symbolic_build_needed(model: keras.Model) -> bool:
    """Workaround 1, part 2: whether ``fit`` must run Keras's symbolic build first.

    Under a distribution strategy Keras 3.15's ``fit`` pulls one batch and all-reduces it
    (``strategy.reduce(MEAN, batch)``) to build unbuilt state symbolically, even when nothing is
    unbuilt; under ``MultiWorkerMirroredStrategy`` that reduction fails converting a
    ``PerReplica`` batch. A model whose layers and optimizer are built, with no compiled losses
    or metrics, has nothing to build, so :class:`~mtl_keras.training.MultiTaskModel` skips it.
    """
    if not NEEDS_MULTI_WORKER_WORKAROUNDS:
        return True
    compiled = [getattr(model, "_compile_metrics", None), getattr(model, "_compile_loss", None)]
    return (
        not all(layer.built for layer in model._flatten_layers())
        or any(c is not None and not c.built for c in compiled)
        or (model.optimizer is not None and not model.optimizer.built)
    )


def reducible_logs(logs: dict) -> dict:
    """Workaround 2: give step logs shape ``[1]`` under a multi-worker strategy.

    Keras 3.15 reduces a multi-worker step's logs with ``strategy.reduce(MEAN, v, axis=0)``,
    which fails on scalars ("Invalid reduction dimension 0"); a ``[1]`` vector reduces to the
    same mean. Anywhere else, and on Keras releases not known to need it, logs are unchanged.
    """
    if not NEEDS_MULTI_WORKER_WORKAROUNDS or not is_multi_worker():
        return logs
    return {k: tf.reshape(v, [1]) for k, v in logs.items()}
