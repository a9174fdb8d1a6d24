"""`MultiTaskModel`: the one place that owns a gradient tape.

The model wraps a functional network (dict outputs keyed by task, deep-supervision outputs keyed
``"{task}/{tag}"``) and trains it with ``model.fit`` through a custom ``train_step`` in Keras's
order: unpack, forward under a tape, task losses, balance, gradients, apply, metrics.

Balancing has three paths, chosen from the balancer alone:

* loss level: ``objective = balancer.combine(losses)``; one backward pass.
* gradient level, ``source="shared"``: per-task gradients of the shared variables (T backward
  passes); the balancer maps their Gramian (or the Jacobian itself) to the update of the shared
  variables; task-specific variables receive the plain ``sum_i g_i`` (``head_weighting="sum"``,
  the default) or ``sum_i w_i g_i`` (``"weighted"``).
* gradient level, ``source="representation"``: per-task gradients of the tensors marked
  :class:`~mtl_keras.architectures.SharedRepresentation` (cheap: heads only); the weights from
  their Gramian combine them and one backward pass through the encoder follows (MGDA-UB).

Distribution: every loss is divided by the replica count, so per-replica gradients sum to the
global-batch gradient, which is what Keras 3's optimizer applies (it *sums* across replicas).
Per-task shared-variable gradients are all-reduced before the balancer runs, and representation
Gramians are summed (the global Gramian of a batch split across replicas is the sum of the local
ones), so every replica computes the same weights.

Mixed precision: under ``mixed_float16`` Keras wraps the optimizer in a ``LossScaleOptimizer``.
Every backward pass then runs on the loss times its dynamic scale (no float16 underflow), per-task
gradients are divided by the scale before any balancer sees them (norms, Gramians and projections
are of the true gradients) and the update is scaled back for the optimizer, which unscales it. A
step with a non-finite gradient on any replica is skipped everywhere and leaves the balancer's
state unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras import tasks as tasks_lib
from mtl_keras.architectures.base import is_auxiliary, sharing_of, task_of, task_specs_of
from mtl_keras.export.saved_model import served_outputs, serving_function
from mtl_keras.tasks import TaskSpec, resolve
from mtl_keras.training.distribute import reducible_logs, symbolic_build_needed
from mtl_keras.training.precision import loss_scale

SOURCES = ("auto", "shared", "representation")


class LabelError(ValueError):
    """A batch's labels do not match the model's tasks or outputs."""


def _specs_for(network, tasks, main, recorded) -> dict[str, TaskSpec]:
    """The TaskSpecs to train ``network`` with: ``tasks`` if given (checked against the network),
    else those the network was built with (its TaskOutput markers), else the names' defaults."""
    specs = resolve([recorded.get(t, t) for t in main] if tasks is None else tasks)
    unknown = [t for t in specs if t not in main]
    if unknown or len(specs) != len(main):
        raise ValueError(
            f"tasks {list(specs)} do not match the network's outputs {main}; pass the "
            "TaskSpecs of exactly the tasks the network predicts"
        )
    for t, spec in specs.items():
        built = recorded.get(t)
        if built is not None and built.get_config() != spec.get_config():
            raise ValueError(
                f"task {t!r}: the given TaskSpec {spec.get_config()} differs from the one network "
                f"{network.name!r} was built with, {built.get_config()}; pass the network's own "
                "(or none: MultiTaskModel(network) takes them from the network)"
            )
        channels = network.output[t].shape[-1]
        if channels is not None and channels != spec.channels:
            raise ValueError(
                f"task {t!r}: the given TaskSpec predicts {spec.channels} channels but network "
                f"{network.name!r} outputs {channels}; pass the TaskSpecs the network was built "
                "with (e.g. the same task_options)"
            )
    return specs


class Subgraph(keras.Function):
    """A part of a functional network as a graph function: from any of its tensors to others.

    Unlike a ``keras.Model`` built on inner tensors, it adds no node to the network's layers, so
    the network still saves. ``losses()`` are those its layers added in the latest call.
    """

    def call(self, inputs, training=None):
        def operation_fn(op):
            def run(*args, **kwargs):
                if getattr(op, "_call_has_training_arg", False) and training is not None:
                    kwargs["training"] = training
                return op(*args, **kwargs)

            return run

        return self._run_through_graph(inputs, operation_fn=operation_fn)

    def __call__(self, inputs, training=None):
        return self.call(inputs, training=training)

    def losses(self) -> list:
        return [loss for op in self.operations for loss in getattr(op, "losses", [])]


def _gradient(tape, target, sources, output_gradients=None, scale=None):
    """``tape.gradient`` with zeros for unconnected sources; loss-scaled when ``scale`` is given.

    With a loss scale (mixed float16), the backward pass runs on ``scale * target`` (the output
    gradients are multiplied by it, in float32, before they are cast to the target's dtype), so
    small gradients of float16 activations do not underflow; the results are divided by it in
    float32, so callers always receive true, unscaled gradients.
    (``UnconnectedGradients.ZERO`` fails on Keras variables in TF 2.21 eager mode.)
    """
    if scale is not None or output_gradients is not None:
        output_gradients = _output_gradients(target, output_gradients, scale)
    grads = tape.gradient(target, sources, output_gradients=output_gradients)
    out = []
    for g, s in zip(grads, sources):
        if g is None:
            g = tf.zeros_like(tf.convert_to_tensor(s))
        elif scale is not None:
            g = tf.cast(g, tf.float32) / scale
        out.append(g)
    return out


def _output_gradients(target, output_gradients, scale):
    """Output gradients (ones by default) times ``scale``, in each target's dtype."""
    single = not isinstance(target, (list, tuple))
    targets = [target] if single else list(target)
    given = [output_gradients] if single else list(output_gradients or [None] * len(targets))
    out = []
    for t, o in zip(targets, given):
        o = tf.ones_like(t, tf.float32) if o is None else tf.cast(o, tf.float32)
        out.append(tf.cast(o if scale is None else o * scale, t.dtype))
    return out[0] if single else out


def _all_finite_on_every_replica(tensors) -> tf.Tensor:
    """True when every element of ``tensors`` is finite on every replica."""
    local = tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32))) for t in tensors]
    )
    return tf.equal(_replica_sum(1.0 - tf.cast(local, tf.float32)), 0.0)


def _replica_mean(x):
    """Mean over replicas (identity outside a multi-replica context)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, x)


def _replica_sum(x):
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


class _BalancerEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.balancer.on_epoch_end()


@keras.saving.register_keras_serializable(package="mtl_keras")
class MultiTaskModel(keras.Model):
    """Trains a multi-output dense-prediction network with a task balancer.

    Args:
        network: functional model returning ``{task: raw prediction}`` (and optional
            ``"{task}/{tag}"`` deep-supervision outputs).
        tasks: TaskSpecs or names of the network's tasks (defaults to its main outputs).
        balancer: a balancer instance or registered name (see ``mtl_keras.balancing``).
        balancer_kwargs: arguments of the balancer when given by name.
        gradient_source: for gradient balancers, ``"shared"`` (variables), ``"representation"``
            or ``"auto"`` (the balancer's first supported source the network allows).
        head_weighting: ``"sum"`` (default) or ``"weighted"``: the gradient task-specific
            variables get under a gradient balancer, ``sum_i g_i`` as in Sener & Koltun's
            Algorithm 2 and LibMTL, or ``sum_i w_i g_i`` as in the Nash-MTL code.
        train_metrics: also update the streaming task metrics during training (off by default:
            they are computed on validation data).
        auxiliary_tasks: TaskSpecs or names of tasks the network predicts only through
            deep-supervision outputs ``"{task}/{tag}"`` (PAD-Net's and MTI-Net's auxiliary tasks,
            e.g. normals and edges on NYUD-v2). Their losses are not balanced: they are added to
            the objective with the fixed ``auxiliary_weights``; the batch must carry their labels.
        auxiliary_weights: ``{task: weight}`` for ``auxiliary_tasks`` (default 1 each).
        gradient_statistics: log per-task gradient norms, pairwise cosine similarities and the
            number of conflicting pairs (``grad_norm_{task}``, ``grad_cos_{a}_{b}``,
            ``grad_conflicts``). ``None`` (default): on for gradient-level balancers, where they
            come from the Gramian the step computes anyway (of the gradients the balancer sees);
            off for loss-level balancers, where ``True`` costs T extra backward passes (through the
            heads when the network declares a shared representation, else through the network).

    Example:
        >>> model = MultiTaskModel(network, ["semseg", "depth"], balancer="mgda")
        >>> model.compile(optimizer="adam")
        >>> model.fit(train_ds, validation_data=val_ds, epochs=2)
    """

    def __init__(
        self,
        network: keras.Model,
        tasks=None,
        balancer: str | balancing.Balancer = "fixed",
        *,
        balancer_kwargs: Mapping | None = None,
        gradient_source: str = "auto",
        head_weighting: str = "sum",
        train_metrics: bool = False,
        auxiliary_tasks=(),
        auxiliary_weights: Mapping[str, float] | None = None,
        gradient_statistics: bool | None = None,
        name: str | None = None,
    ):
        super().__init__(name=name or f"{network.name}_trainer")
        self.network = network
        main = [k for k in network.output if not is_auxiliary(k)]
        recorded = task_specs_of(network)
        specs = _specs_for(network, tasks, main, recorded)
        unknown = [t for t in specs if t not in main]
        if unknown or len(specs) != len(main):
            raise ValueError(
                f"tasks {list(specs)} do not match the network's outputs {main}; pass the "
                "TaskSpecs of exactly the tasks the network predicts"
            )
        self._specs: dict[str, TaskSpec] = specs
        self.task_names = tuple(specs)
        if not auxiliary_tasks:  # the auxiliary tasks the network was built with, if recorded
            auxiliary_tasks = [s for t, s in recorded.items() if t not in main]
        self._aux_specs = self._auxiliary_specs(auxiliary_tasks, auxiliary_weights, main)
        self._aux = {k: task_of(k) for k in network.output if is_auxiliary(k)}
        bad_aux = sorted(
            {t for t in self._aux.values() if t not in specs and t not in self._aux_specs}
        )
        if bad_aux:
            raise ValueError(
                f"the network has deep-supervision outputs for {bad_aux}, which are neither its "
                f"tasks {list(specs)} nor declared auxiliary_tasks {list(self._aux_specs)}; pass "
                "them as auxiliary_tasks"
            )
        unused = [t for t in self._aux_specs if t not in self._aux.values()]
        if unused:
            raise ValueError(
                f"auxiliary_tasks {unused} have no deep-supervision output in the network "
                f"(outputs: {list(network.output)}); build the network with these auxiliary tasks"
            )
        if head_weighting not in ("weighted", "sum"):
            raise ValueError(f"head_weighting must be 'weighted' or 'sum', got {head_weighting!r}")
        self.head_weighting = head_weighting
        self._config = {
            "gradient_source": gradient_source,
            "head_weighting": head_weighting,
            "train_metrics": train_metrics,
            "auxiliary_weights": dict(auxiliary_weights or {}),
            "gradient_statistics": gradient_statistics,
        }
        self.train_metrics = train_metrics

        self.balancer = balancing.get(balancer, **dict(balancer_kwargs or {}))
        self.balancer.setup(self.task_names)
        self._sharing = sharing_of(network)
        # the balancer's one declaration: the input it takes on each gradient path
        self._loss_level = "loss" in self.balancer.needs.paths
        self.gradient_source = self._choose_source(gradient_source)
        self._input = self.balancer.needs.paths[self.gradient_source or "loss"]
        if gradient_statistics is None:
            gradient_statistics = not self._loss_level
        self.gradient_statistics = bool(gradient_statistics)
        # loss-level statistics: gradients of the representation if declared, else of the shared
        # variables (None: no statistics)
        self._stats_source = None
        if self.gradient_statistics and self._loss_level:
            if self._sharing.representation_layers:
                self._stats_source = "representation"
            elif self._sharing.shared_variables:
                self._stats_source = "shared"
            else:
                raise ValueError(
                    "gradient_statistics=True needs shared variables or a declared "
                    "SharedRepresentation; the network has neither"
                )
        reps = [layer.output for layer in self._sharing.representation_layers]
        if self._stats_source == "representation":
            self._forward = keras.Model(network.input, {"outputs": network.output, "rep": reps})
        else:
            self._forward = None
        if self.gradient_source == "representation":
            # The network split at its representation z: a tape over the heads alone gives the
            # per-task dL_i/dz without also differentiating the encoder T times (a tape
            # differentiates everything it recorded between a target and the input, whatever the
            # sources asked for); a second tape over the encoder takes J_z^T (sum_i w_i dL_i/dz).
            self._encoder = keras.Model(network.input, reps, name=f"{network.name}_encoder")
            # a graph function, not a Model: a Model whose inputs are inner tensors of the network
            # adds nodes to the network's layers, and the network could no longer be saved
            self._heads = Subgraph([*tf.nest.flatten(network.input), *reps], network.output)
        else:
            self._encoder = self._heads = None

        if self.gradient_source == "shared":
            shared_ids = {id(v) for v in self._sharing.shared_variables}
            self.balancer.build_parameter_state(
                [v.shape.num_elements() for v in self.trainable_variables if id(v) in shared_ids]
            )

        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._task_loss_trackers = {
            k: keras.metrics.Mean(name=f"{k}_loss") for k in (*self.task_names, *self._aux)
        }
        self._weight_trackers = {t: keras.metrics.Mean(name=f"{t}_weight") for t in self.task_names}
        self._stat_trackers = {}
        if self.gradient_statistics:
            names = [f"grad_norm_{t}" for t in self.task_names]
            names += [
                f"grad_cos_{a}_{b}"
                for i, a in enumerate(self.task_names)
                for b in self.task_names[i + 1 :]
            ]
            names.append("grad_conflicts")
            self._stat_trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._task_metrics = {t: s.metrics() for t, s in specs.items()}
        self.built = True  # the wrapped network is built; nothing is created lazily

    # ------------------------------------------------------------------ set-up helpers
    def _choose_source(self, source: str) -> str | None:
        if source not in SOURCES:
            raise ValueError(f"unknown gradient_source {source!r}; valid: {', '.join(SOURCES)}")
        if self._loss_level:
            return None
        allowed = list(self.balancer.needs.paths)
        if not self._sharing.representation_layers and "representation" in allowed:
            allowed.remove("representation")
        if not self._sharing.shared_variables and "shared" in allowed:
            allowed.remove("shared")
        if source == "auto":
            if not allowed:
                raise ValueError(
                    f"balancer {balancing.method_name(self.balancer)!r} needs "
                    f"{tuple(self.balancer.needs.paths)} but the network has neither shared "
                    "variables "
                    "nor a declared shared representation"
                )
            return allowed[0]
        if source not in allowed:
            raise ValueError(
                f"gradient_source={source!r} is not possible here: balancer "
                f"{balancing.method_name(self.balancer)!r} "
                f"accepts {list(self.balancer.needs.paths)}, and the network "
                + (
                    "declares no SharedRepresentation"
                    if source == "representation"
                    else "has no shared variables"
                )
            )
        return source

    @staticmethod
    def _auxiliary_specs(auxiliary_tasks, auxiliary_weights, main) -> dict[str, TaskSpec]:
        specs = resolve(auxiliary_tasks) if auxiliary_tasks else {}
        overlap = [t for t in specs if t in main]
        if overlap:
            raise ValueError(
                f"auxiliary_tasks {overlap} are also main tasks of the network; a task is either "
                "predicted (and balanced) or auxiliary (deep supervision only)"
            )
        weights = dict(auxiliary_weights or {})
        unknown = [t for t in weights if t not in specs]
        if unknown:
            raise ValueError(
                f"auxiliary_weights for {unknown}, which are not auxiliary_tasks {list(specs)}"
            )
        return {t: (spec, float(weights.get(t, 1.0))) for t, spec in specs.items()}

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return dict(self._specs)

    @property
    def auxiliary_tasks(self) -> dict[str, TaskSpec]:
        """Tasks supervised only through deep-supervision outputs, with fixed weights."""
        return {t: spec for t, (spec, _) in self._aux_specs.items()}

    @property
    def sharing(self):
        return self._sharing

    @property
    def metrics(self):
        out = [
            self._loss_tracker,
            *self._task_loss_trackers.values(),
            *self._weight_trackers.values(),
            *self._stat_trackers.values(),
        ]
        for ms in self._task_metrics.values():
            out.extend(ms)
        return out

    def get_config(self) -> dict:
        """The constructor's arguments: the network, TaskSpecs and balancer as configs."""
        if type(self) is not MultiTaskModel:
            raise NotImplementedError(
                f"{type(self).__name__} cannot be saved as a .keras file yet; save its weights "
                "(model.save_weights) and the network (model.network.save)"
            )
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "tasks": [spec.get_config() for spec in self._specs.values()],
            "balancer": keras.saving.serialize_keras_object(self.balancer),
            "auxiliary_tasks": [spec.get_config() for spec in self.auxiliary_tasks.values()],
            **self._config,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(
            config.pop("network"), custom_objects=custom_objects
        )
        balancer = keras.saving.deserialize_keras_object(
            config.pop("balancer"), custom_objects=custom_objects
        )
        specs = [tasks_lib.from_config(c) for c in config.pop("tasks")]
        config["auxiliary_tasks"] = [tasks_lib.from_config(c) for c in config["auxiliary_tasks"]]
        return cls(network, specs, balancer, **config)

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, **kwargs):
        """``keras.Model.compile`` without ``loss`` and ``loss_weights``: the TaskSpecs define
        the losses and the balancer weighs them."""
        if loss is not None or loss_weights is not None:
            given = "loss" if loss is not None else "loss_weights"
            raise ValueError(
                f"MultiTaskModel.compile does not take {given}=: each task's loss comes from its "
                "TaskSpec and the balancer weighs them. For fixed task weights build the model "
                'with balancer="fixed", balancer_kwargs={"weights": {"semseg": 1.0, "depth": '
                "2.0}}; for a different loss, pass a TaskSpec with that loss"
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Compile a loaded model as it was saved (its optimizer, then the optimizer's state)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:  # variables now, so the saved optimizer state loads into them
            self.optimizer.build(self.trainable_variables)

    def predict_step(self, data):
        """What the served model returns: each task's ``serve`` outputs (probabilities, unit
        normals, metric depth, class maps), keyed ``"{task}"`` for a task with one output and
        ``"{task}_{name}"`` otherwise. Raw outputs: ``model.network.predict``."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return served_outputs(self._specs, self.network(x, training=False))

    def export(self, filepath, format="tf_saved_model", verbose=None, *, image_size=None, **kwargs):
        """Write a SavedModel whose ``serving_default`` is that of ``mtl-keras export``: uint8
        images ``[B, H, W, 3]`` of any size in, every task's served outputs at that size out.

        Args:
            filepath: the SavedModel folder to write.
            format: ``"tf_saved_model"`` (the only one: TF Serving's).
            image_size: ``(H, W)`` the network runs at (default: its input shape).
        """
        if format != "tf_saved_model" or kwargs:
            raise ValueError(
                f"MultiTaskModel.export writes format='tf_saved_model' only (got {format!r}"
                f"{', ' + ', '.join(kwargs) if kwargs else ''}); export model.network for others"
            )
        size = image_size or tuple(self.network.input.shape[1:3])
        if None in size:
            raise ValueError(
                f"network {self.network.name!r} takes images of any size; pass "
                "export(path, image_size=(H, W)), the size it was trained at"
            )
        archive = keras.export.ExportArchive()
        archive.track(self.network)
        archive.add_endpoint(
            name="serving_default",
            fn=serving_function(self.network, self._specs, size),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        )
        archive.write_out(filepath, verbose=bool(verbose))

    def fit(self, *args, callbacks=None, **kwargs):
        """``keras.Model.fit`` that also tells the balancer when an epoch ends (DWA)."""
        callbacks = [*(callbacks or []), _BalancerEpochEnd()]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 workaround (mtl_keras.training.distribute.symbolic_build_needed)
        if symbolic_build_needed(self):
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def get_metrics_result(self):
        """Final logs from the (replica-summed) metric states, under the keys the steps log.

        Keras replaces the averaged per-replica step logs with these at the end of an epoch, so
        pooled metrics (mIoU, RMSE, ...) are exact under a distribution strategy.
        """
        logs = {
            m.name: m.result() for m in (self._loss_tracker, *self._task_loss_trackers.values())
        }
        logs.update({m.name: m.result() for m in self._weight_trackers.values()})
        logs.update({m.name: m.result() for m in self._stat_trackers.values()})
        for t, spec in self._specs.items():
            for m in self._task_metrics[t]:
                logs.update({spec.metric_id(k): v for k, v in m.result().items()})
        return reducible_logs(logs)

    def _get_metrics_result_or_logs(self, logs):
        # Keras 3.15 only swaps in get_metrics_result() when its keys equal the step's keys;
        # ours differ between training and evaluation, so take the pooled value of every key
        # the step logged (and keep the rest, e.g. the learning rate, as logged).
        if not isinstance(logs, dict):
            return super()._get_metrics_result_or_logs(logs)
        pooled = self.get_metrics_result()
        return {k: pooled.get(k, v) for k, v in logs.items()}

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    # ------------------------------------------------------------------ losses
    def _check_labels(self, y) -> None:
        if not isinstance(y, Mapping):
            raise LabelError(
                f"labels must be a dict keyed by task name {list(self.task_names)}, got "
                f"{type(y).__name__}"
            )
        missing = [t for t in (*self.task_names, *self._aux_specs) if t not in y]
        if missing:
            raise LabelError(
                f"label for task(s) {missing} missing from the batch; the batch has labels for "
                f"{sorted(y)}; give a label per task (auxiliary tasks included) or build the "
                "model without those tasks"
            )

    def _spec_of(self, key: str) -> TaskSpec:
        task = task_of(key)
        return self._specs[task] if task in self._specs else self._aux_specs[task][0]

    def _loss(self, key: str, label, prediction) -> tf.Tensor:
        spec = self._spec_of(key)
        lshape, pshape = label.shape, prediction.shape
        if lshape.rank != 4 or (lshape[-1] is not None and lshape[-1] != spec.label_channels):
            raise LabelError(
                f"label of task {spec.name!r} has shape {tuple(lshape)}; expected "
                f"(batch, height, width, {spec.label_channels})"
            )
        if pshape[-1] != spec.channels:
            raise LabelError(
                f"output {key!r} has {pshape[-1]} channels; task {spec.name!r} needs "
                f"{spec.channels}"
            )
        if is_auxiliary(key):  # deep supervision: bring the prediction to the label's size
            prediction = tf.image.resize(prediction, tf.shape(label)[1:3], method="bilinear")
        elif None not in (lshape[1], lshape[2], pshape[1], pshape[2]) and tuple(
            lshape[1:3]
        ) != tuple(pshape[1:3]):
            raise LabelError(
                f"label of task {spec.name!r} has shape {tuple(lshape)} but its prediction has "
                f"shape {tuple(pshape)}; labels must have the spatial size of the input image"
            )
        return tf.cast(spec.loss(label, prediction, count_mean=_replica_mean), tf.float32)

    def task_losses(self, y, outputs) -> tuple[tf.Tensor, dict]:
        """Per-task losses (T,) including deep supervision, and every term by output key
        (auxiliary tasks' terms included; they are not part of the per-task losses)."""
        per_task, terms = self._task_loss_list(y, outputs)
        return tf.stack(per_task), terms

    def _task_loss_list(self, y, outputs) -> tuple[list, dict]:
        """`task_losses` with each task's loss as its own tensor (see `train_step`)."""
        self._check_labels(y)
        terms = {k: self._loss(k, y[task_of(k)], outputs[k]) for k in outputs}
        per_task = [
            tf.add_n([v for k, v in terms.items() if task_of(k) == t]) for t in self.task_names
        ]
        return per_task, terms

    def extra_loss(self, terms, network_losses) -> tf.Tensor | None:
        """What the objective adds outside the balancer, or None: the auxiliary tasks' terms
        times their fixed weights, plus the network's own losses (``add_loss``, e.g. the sluice
        networks' subspace orthogonality; weight regularisers). Weight decay is the optimizer's."""
        parts = [
            self._aux_specs[task_of(k)][1] * terms[k]
            for k in self._aux
            if task_of(k) in self._aux_specs
        ]
        parts += [tf.cast(v, tf.float32) for v in network_losses]
        return tf.add_n(parts) if parts else None

    # ------------------------------------------------------------------ steps
    def _forward_pass(self, x, training):
        if self._forward is not None:
            out = self._forward(x, training=training)
            return out["outputs"], out["rep"]
        return self.network(x, training=training), None

    def train_step(self, data):
        x, y = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        scale = loss_scale(self.optimizer)  # None unless mixed float16
        state = None if scale is None else self._snapshot_balancer_state()
        loss_level = self._loss_level
        persistent = not loss_level or self._stats_source is not None
        split = self._heads is not None
        encoder_tape = encoder_extra = None
        if split:
            with tf.GradientTape() as encoder_tape:
                rep = list(tf.nest.flatten(self._encoder(x, training=True)))
                encoder_losses = [tf.cast(v, tf.float32) for v in self._encoder.losses]
                if encoder_losses:  # the encoder's own losses (add_loss, regularisers)
                    encoder_extra = tf.add_n(encoder_losses) / replicas
        with tf.GradientTape(persistent=persistent) as tape:
            if split:
                tape.watch(rep)
                outputs = self._heads([*tf.nest.flatten(x), *rep], training=True)
                network_losses = self._heads.losses()
            else:
                outputs, rep = self._forward_pass(x, training=True)
                network_losses = self.network.losses
            # Each task's loss as its own tensor (not sliced from the stack): the gradient of a
            # slice sends zeros back through every other task's branch, which the tape would
            # differentiate once per task.
            per_task, terms = self._task_loss_list(y, outputs)
            losses = tf.stack(per_task)
            extra = self.extra_loss(terms, network_losses)
            scaled = losses / replicas
            per_task_losses = [v / replicas for v in per_task]
            global_losses = tf.stop_gradient(_replica_sum(scaled))
            if extra is not None:
                extra_scaled = extra / replicas
            if loss_level:
                objective, weights = self.balancer.combine(
                    losses, global_losses, self.optimizer.iterations
                )
                objective = objective / replicas
                if extra is not None:
                    objective = objective + extra_scaled
        gramian = None
        if loss_level:
            # scaled by the loss scale when there is one: LossScaleOptimizer unscales them
            grads = tape.gradient(objective, variables, output_gradients=scale)
            if self._stats_source is not None:
                gramian = self._statistics_gramian(tape, per_task_losses, rep, variables, scale)
        elif split:
            grads, weights, gramian = self._representation_step(
                (tape, encoder_tape),
                per_task_losses,
                rep,
                global_losses,
                variables,
                scale,
                extra=(extra_scaled if extra is not None else None, encoder_extra),
            )
        else:
            grads, weights, gramian = self._shared_step(
                tape, per_task_losses, global_losses, variables, scale
            )
        if not loss_level and not split and extra is not None:
            # outside the balancer: auxiliary tasks and the network's own losses
            grads = [
                tf.cast(tf.cast(g, tf.float32) + e, g.dtype)
                for g, e in zip(grads, _gradient(tape, extra_scaled, variables, scale=scale))
            ]
        del tape
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
        if scale is not None:
            grads, finite = self._loss_scaled_update(grads, state, scale)
        self.optimizer.apply(grads, variables)
        if self.balancer.needs.losses_after_step:
            # FAMO: losses of the same batch after the update (training mode, as the paper)
            after, _ = self.task_losses(y, self.network(x, training=True))
            self.balancer.after_step(
                global_losses,
                tf.stop_gradient(_replica_sum(after / replicas)),
                self.optimizer.iterations,
            )
        if scale is not None:
            self._restore_balancer_state_unless(finite, state)
        weighted_total = tf.reduce_sum(tf.stop_gradient(weights) * losses)
        if extra is not None:
            weighted_total += tf.stop_gradient(extra)
        if gramian is not None and self.gradient_statistics:
            self._record_statistics(gramian)
        return self._update_trackers(losses, terms, y, outputs, weighted_total, weights)

    # ------------------------------------------------------------------ gradient statistics
    def _statistics_gramian(self, tape, scaled, rep, variables, scale):
        """Gramian of the per-task gradients for a loss-level balancer's statistics (T extra
        backward passes): of the representation when declared, else of the shared variables
        (all-reduced first, so the Gramian is of the global batch's gradients)."""
        if self._stats_source == "representation":
            sources = rep
        else:
            shared_ids = {id(v) for v in self._sharing.shared_variables}
            sources = [v for v in variables if id(v) in shared_ids]
        z = tf.stack(
            [
                tf.concat(
                    [
                        tf.reshape(tf.cast(g, tf.float32), [-1])
                        for g in _gradient(tape, loss, sources, scale=scale)
                    ],
                    0,
                )
                for loss in scaled
            ]
        )
        if self._stats_source == "representation":
            # a batch split over replicas: its Gramian is the sum of the local ones
            return _replica_sum(tf.matmul(z, z, transpose_b=True))
        z = _replica_sum(z)  # the global batch's gradients of the shared variables
        return tf.matmul(z, z, transpose_b=True)

    def _record_statistics(self, gramian) -> None:
        """Per-task gradient norms, pairwise cosines and the conflicting-pair count."""
        stats = balancing.gramian_statistics(tf.stop_gradient(gramian))
        for i, t in enumerate(self.task_names):
            self._stat_trackers[f"grad_norm_{t}"].update_state(stats["norms"][i])
            for j in range(i + 1, len(self.task_names)):
                name = f"grad_cos_{t}_{self.task_names[j]}"
                self._stat_trackers[name].update_state(stats["cosine"][i, j])
        self._stat_trackers["grad_conflicts"].update_state(tf.cast(stats["conflicts"], tf.float32))

    # ------------------------------------------------------------------ loss scaling
    def _snapshot_balancer_state(self):
        return [
            (v, tf.identity(tf.convert_to_tensor(v))) for v in self.balancer.non_trainable_variables
        ]

    def _loss_scaled_update(self, grads, state, scale):
        """Gradients for ``LossScaleOptimizer.apply`` and whether the step is finite.

        Loss-level gradients arrive scaled; gradient-level ones were unscaled for the balancer
        and are scaled back here (the scale is a power of two: exact). The step is finite only
        if every gradient and the balancer's new state are finite on *every* replica; otherwise
        all replicas hand NaN gradients to the optimizer, so all of them skip the step and halve
        the scale together (the optimizer alone would look at the first replica only).
        """
        if not self._loss_level:
            grads = [tf.cast(tf.cast(g, tf.float32) * scale, g.dtype) for g in grads]
        finite = _all_finite_on_every_replica([*grads, *(v for v, _ in state)])
        poison = tf.where(finite, 0.0, float("nan"))
        return [g + tf.cast(poison, g.dtype) for g in grads], finite

    def _restore_balancer_state_unless(self, finite, state) -> None:
        """A step skipped by loss scaling leaves the balancer's state as it was."""
        for v, before in state:
            v.assign(tf.where(finite, tf.convert_to_tensor(v), before))

    def _combine(self, per_task, weights, shared_ids, variables):
        """Per variable: ``sum_i w_i g_i`` if shared, ``sum_i c_i g_i`` if task-specific."""
        head_c = weights if self.head_weighting == "weighted" else tf.ones_like(weights)
        out = []
        for j, v in enumerate(variables):
            coef = weights if id(v) in shared_ids else head_c
            out.append(
                tf.add_n([coef[i] * tf.cast(g[j], tf.float32) for i, g in enumerate(per_task)])
            )
        return out

    def _representation_step(
        self, tapes, scaled, rep, global_losses, variables, scale=None, extra=(None, None)
    ):
        """MGDA-UB style: balance the gradients of the shared representation ``z``.

        ``tapes`` are the tape over the heads (``z`` watched) and the one over the encoder. Per
        task, one backward pass through the heads gives ``dL_i/dz`` and the task's gradient of
        every head variable; the weights come from the Gramian of the ``dL_i/dz`` (summed over
        replicas); the encoder receives ``J_z^T sum_i w_i dL_i/dz`` in a single backward pass
        through it. ``extra`` (heads' part, encoder's part) is added unweighted: auxiliary tasks
        and the network's own losses.
        """
        tape, encoder_tape = tapes
        extra_heads, extra_encoder = extra
        up_ids = {id(v) for v in self._sharing.representation_variables}
        up = [v for v in variables if id(v) in up_ids]
        down = [v for v in variables if id(v) not in up_ids]
        t = len(self.task_names)
        if self._input == "representation_gradients":
            # GradDrop: the balancer rewrites dL/dz itself; heads get sum_i g_i
            task_grads = [
                tf.stack([_gradient(tape, scaled[i], [r], scale=scale)[0] for i in range(t)])
                for r in rep
            ]
            rep_grad = self.balancer.representation_gradients(
                task_grads, rep, global_losses, self.optimizer.iterations, replica_sum=_replica_sum
            )
            rep_grad = [tf.cast(g, tf.float32) for g in rep_grad]
            down_grads = _gradient(tape, list(scaled), down, scale=scale)
            weights = tf.ones([t], tf.float32)
            gramian = None
            if self.gradient_statistics:
                z = tf.concat([tf.reshape(tf.cast(g, tf.float32), [t, -1]) for g in task_grads], 1)
                gramian = _replica_sum(tf.matmul(z, z, transpose_b=True))
        else:
            gz, per_task = [], []
            for i in range(t):
                g = _gradient(tape, scaled[i], [*rep, *down], scale=scale)
                gz.append(g[: len(rep)])
                per_task.append(g[len(rep) :])
            z = tf.stack(
                [tf.concat([tf.reshape(tf.cast(r, tf.float32), [-1]) for r in g], 0) for g in gz]
            )
            gramian = _replica_sum(tf.matmul(z, z, transpose_b=True))
            weights = self.balancer.weights_from_gramian(
                gramian, global_losses, self.optimizer.iterations
            )
            weights = tf.stop_gradient(tf.cast(weights, tf.float32))
            shared_ids = {id(v) for v in self._sharing.shared_variables}
            down_grads = self._combine(per_task, weights, shared_ids, down)
            rep_grad = [
                tf.add_n([weights[i] * tf.cast(g[k], tf.float32) for i, g in enumerate(gz)])
                for k in range(len(rep))
            ]
        if extra_heads is not None:
            g = _gradient(tape, extra_heads, [*rep, *down], scale=scale)
            rep_grad = [a + tf.cast(b, tf.float32) for a, b in zip(rep_grad, g[: len(rep)])]
            down_grads = [
                tf.cast(a, tf.float32) + tf.cast(b, tf.float32)
                for a, b in zip(down_grads, g[len(rep) :])
            ]
        targets, out_grads = list(rep), list(rep_grad)
        if extra_encoder is not None:
            targets.append(extra_encoder)
            out_grads.append(None)
        up_grads = _gradient(encoder_tape, targets, up, out_grads, scale)
        by_id = {id(v): g for v, g in zip(down, down_grads)}
        by_id.update({id(v): g for v, g in zip(up, up_grads)})
        return [tf.cast(by_id[id(v)], v.dtype) for v in variables], weights, gramian

    def _shared_step(self, tape, scaled, global_losses, variables, scale=None):
        """Balance the per-task gradients of the shared variables (T backward passes).

        Shared-variable gradients are all-reduced over replicas before the balancer runs; the
        balanced update is handed to the optimizer divided by the replica count because Keras
        sums replicas' gradients.
        """
        shared_ids = {id(v) for v in self._sharing.shared_variables}
        per_task = [
            _gradient(tape, scaled[i], variables, scale=scale) for i in range(len(self.task_names))
        ]
        shared_idx = [j for j, v in enumerate(variables) if id(v) in shared_ids]
        # per shared variable, the (T, ...) stack of task gradients of the global batch
        reduced = _replica_sum(
            [tf.stack([tf.cast(g[j], tf.float32) for g in per_task]) for j in shared_idx]
        )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        step = self.optimizer.iterations
        if self._input == "gramian":
            gramian = tf.add_n(
                [
                    tf.matmul(
                        tf.reshape(s, [s.shape[0], -1]),
                        tf.reshape(s, [s.shape[0], -1]),
                        transpose_b=True,
                    )
                    for s in reduced
                ]
            )
            weights = tf.cast(
                self.balancer.weights_from_gramian(gramian, global_losses, step), tf.float32
            )
            shared_updates = [tf.tensordot(weights, s, 1) for s in reduced]
        else:
            flat = tf.concat([tf.reshape(s, [s.shape[0], -1]) for s in reduced], 1)
            gramian = tf.matmul(flat, flat, transpose_b=True) if self.gradient_statistics else None
            update = self.balancer.aggregate(flat, global_losses, step)
            pieces = tf.split(update, [s.shape[1:].num_elements() for s in reduced])
            shared_updates = [tf.reshape(p, s.shape[1:]) for p, s in zip(pieces, reduced)]
            weights = tf.cast(self.balancer.head_weights(global_losses, step), tf.float32)
        weights = tf.stop_gradient(weights)
        grads = self._combine(per_task, weights, set(), variables)  # task-specific rule for all
        for j, upd in zip(shared_idx, shared_updates):
            grads[j] = upd / replicas
        return [tf.cast(g, v.dtype) for g, v in zip(grads, variables)], weights, gramian

    def test_step(self, data):
        x, y = data[0], data[1]
        outputs = self.network(x, training=False)
        losses, terms = self.task_losses(y, outputs)
        return self._update_trackers(losses, terms, y, outputs, tf.reduce_sum(losses), None)

    def _update_trackers(self, losses, terms, y, outputs, total, weights):
        """Update trackers and metrics; ``weights`` is None in evaluation.

        The logged ``loss`` is the weighted total in training and the plain sum of task losses in
        evaluation (balancer weights change during training and would make it incomparable).
        """
        training = weights is not None
        self._loss_tracker.update_state(total)
        for i, t in enumerate(self.task_names):
            self._task_loss_trackers[t].update_state(losses[i])
            if training:
                self._weight_trackers[t].update_state(weights[i])
        for k in self._aux:
            self._task_loss_trackers[k].update_state(terms[k])
        logs = {
            m.name: m.result() for m in (self._loss_tracker, *self._task_loss_trackers.values())
        }
        if training:
            logs.update({m.name: m.result() for m in self._weight_trackers.values()})
            logs.update({m.name: m.result() for m in self._stat_trackers.values()})
            logs["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        if training and not self.train_metrics:
            return reducible_logs(logs)
        for t, spec in self._specs.items():
            pred = spec.activate(outputs[t])
            for m in self._task_metrics[t]:
                m.update_state(y[t], pred)
                logs.update({spec.metric_id(k): v for k, v in m.result().items()})
        return reducible_logs(logs)
