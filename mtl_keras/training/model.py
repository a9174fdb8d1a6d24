"""`MultiTaskModel`: trains a multi-output network with a task balancer through ``model.fit``.

The step follows Keras's own (``keras/src/backend/tensorflow/trainer.py``): unpack, forward under
the tapes, task losses, the update from the gradient path, apply, metrics. What varies lives in
one place each: the gradient path (:mod:`~mtl_keras.training.gradient_paths`, chosen once from the
balancer's declared needs), the objective outside the balancer
(:mod:`~mtl_keras.training.objective`), replica arithmetic (:mod:`~mtl_keras.training.replicas`),
loss scaling (:class:`~mtl_keras.training.precision.LossScaling`) and the logs
(:mod:`~mtl_keras.training.step_logs`).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras import tasks as tasks_lib
from mtl_keras.architectures.base import sharing_of
from mtl_keras.export.saved_model import served_outputs, write_saved_model
from mtl_keras.tasks import TaskSpec
from mtl_keras.training import clipping, gradient_paths, replicas
from mtl_keras.training.callbacks import NonFiniteLossGuard
from mtl_keras.training.distribute import symbolic_build_needed
from mtl_keras.training.objective import LabelError, Objective, label_errors, network_tasks
from mtl_keras.training.precision import LossScaling
from mtl_keras.training.step_logs import StepLogs

__all__ = ["LabelError", "MultiTaskModel"]


class _BalancerEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.balancer.on_epoch_end()


@keras.saving.register_keras_serializable(package="mtl_keras")
class MultiTaskModel(keras.Model):
    """Trains a multi-output dense-prediction network with a task balancer.

    Args:
        network: functional model returning ``{task: raw prediction}`` (and optional
            ``"{task}/{tag}"`` deep-supervision outputs).
        tasks: TaskSpecs or names of the network's tasks (default: those it was built with).
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
            deep-supervision outputs ``"{task}/{tag}"`` (PAD-Net's and MTI-Net's auxiliary tasks).
            Their losses are not balanced: they are added with the fixed ``auxiliary_weights``;
            the batch must carry their labels. Default: those the network was built with.
        auxiliary_weights: ``{task: weight}`` for ``auxiliary_tasks`` (default 1 each).
        gradient_statistics: log per-task gradient norms and pairwise cosines (``None``: on for
            gradient-level balancers, free there; for loss-level ones T more backward passes).
        objective_terms: :class:`~mtl_keras.training.objective.ObjectiveTerm` objects added to
            the objective outside the balancer (ASTMT's adversarial discriminator).

    ``predict`` returns the served outputs (:meth:`predict_step`); raw: ``model.network``.

    Example:
        >>> model = MultiTaskModel(network, balancer="mgda")
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
        objective_terms=(),
        name: str | None = None,
    ):
        super().__init__(name=name or f"{network.name}_trainer")
        if head_weighting not in ("weighted", "sum"):
            raise ValueError(f"head_weighting must be 'weighted' or 'sum', got {head_weighting!r}")
        self.network = network
        self._specs, self._aux_specs = network_tasks(
            network, tasks, auxiliary_tasks, auxiliary_weights
        )
        self.task_names = tuple(self._specs)
        self._config = {
            "gradient_source": gradient_source,
            "head_weighting": head_weighting,
            "train_metrics": train_metrics,
            "auxiliary_weights": dict(auxiliary_weights or {}),
            "gradient_statistics": gradient_statistics,
        }
        self.head_weighting, self.train_metrics = head_weighting, train_metrics
        self.balancer = balancing.get(balancer, **dict(balancer_kwargs or {}))
        self.balancer.setup(self.task_names)
        self.sharing = sharing_of(network)
        path = gradient_paths.choose(self.balancer, self.sharing, gradient_source)
        self.gradient_source = None if path == "loss" else path
        free = self.balancer.level == "gradient"  # the step forms the Gramian anyway
        self.gradient_statistics = bool(
            free if gradient_statistics is None else gradient_statistics
        )
        self.objective_terms = list(objective_terms)  # tracked: their variables train and save
        taps = {}
        for term in self.objective_terms:
            taps.update(term.bind(network, self._specs, path, self.balancer))
        self._objective = Objective(
            self._specs, self._aux_specs, network.output, self.objective_terms
        )
        parts = (network, self.sharing, self.balancer, self._objective, taps)
        self._path = gradient_paths.PATHS[path](*parts, self.gradient_statistics, head_weighting)
        term_logs = [n for term in self.objective_terms for n in term.log_names]
        self._logs = StepLogs(
            self._specs, self._objective.deep, self.gradient_statistics, term_logs, train_metrics
        )
        self.built = True  # the wrapped network is built; nothing is created lazily

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        step = self.optimizer.iterations
        scaling = LossScaling(self.optimizer, self.balancer.non_trainable_variables)
        record = self._path.forward(x, y, step)
        update = self._path.update(record, self.trainable_variables, scaling, step)
        grads, variables, finite = scaling.for_optimizer(
            update.gradients, self.trainable_variables, update.scaled
        )
        clipping.apply(self.optimizer, grads, variables)  # clips the global batch's gradient
        if self.balancer.needs.losses_after_step:
            self._after_step(x, y, record.global_losses)
        scaling.keep_state_if(finite)
        return self._logs.train(record, update, y, self.optimizer.learning_rate)

    def _after_step(self, x, y, before) -> None:
        """The same batch's losses after the update, for the balancer (FAMO: training mode)."""
        after = tf.stack(self._objective.task_losses(y, self.network(x, training=True))[0])
        self.balancer.after_step(before, replicas.global_mean(after), self.optimizer.iterations)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self.network(x, training=False)
        losses, terms = self.task_losses(y, outputs)
        return self._logs.test(losses, terms, y, outputs)

    def task_losses(self, y, outputs) -> tuple[tf.Tensor, dict]:
        """Per-task losses (T,) including deep supervision, and every term by output key
        (auxiliary tasks' terms included; they are not part of the per-task losses)."""
        per_task, terms = self._objective.task_losses(y, outputs)
        return tf.stack(per_task), terms

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    # ------------------------------------------------------------------ Keras behaviour
    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return dict(self._specs)

    @property
    def auxiliary_tasks(self) -> dict[str, TaskSpec]:
        """Tasks supervised only through deep-supervision outputs, with fixed weights."""
        return {t: spec for t, (spec, _) in self._aux_specs.items()}

    @property
    def metrics(self):
        return self._logs.metrics

    def get_metrics_result(self):
        """Final logs from the (replica-summed) metric states, under the keys the steps log:
        pooled metrics (mIoU, RMSE, ...) are exact under a distribution strategy."""
        return self._logs.result()

    def _get_metrics_result_or_logs(self, logs):
        # Keras 3.15 swaps in get_metrics_result() only when its keys equal the step's; take the
        # pooled value of every key the step logged (the rest, e.g. the learning rate, as is).
        if not isinstance(logs, dict):
            return super()._get_metrics_result_or_logs(logs)
        pooled = self.get_metrics_result()
        return {k: pooled.get(k, v) for k, v in logs.items()}

    def get_config(self) -> dict:
        """The constructor's arguments: the network, TaskSpecs, balancer and terms as configs."""
        return {
            "name": self.name,
            "network": keras.saving.serialize_keras_object(self.network),
            "tasks": [spec.get_config() for spec in self._specs.values()],
            "balancer": keras.saving.serialize_keras_object(self.balancer),
            "auxiliary_tasks": [spec.get_config() for spec in self.auxiliary_tasks.values()],
            "objective_terms": [
                keras.saving.serialize_keras_object(t) for t in self.objective_terms
            ],
            **self._config,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)

        def load(c):
            return keras.saving.deserialize_keras_object(c, custom_objects=custom_objects)

        network, balancer = load(config.pop("network")), load(config.pop("balancer"))
        specs = [tasks_lib.from_config(c) for c in config.pop("tasks")]
        config["auxiliary_tasks"] = [tasks_lib.from_config(c) for c in config["auxiliary_tasks"]]
        config["objective_terms"] = [load(c) for c in config.get("objective_terms", [])]
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
        clipping.install(self.optimizer)  # clip the global batch's gradient on every replica

    def compile_from_config(self, config):
        """Compile a loaded model as it was saved (its optimizer, then the optimizer's state)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:  # variables now, so the saved optimizer state loads into them
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, callbacks=None, **kwargs):
        """``keras.Model.fit`` that tells the balancer when an epoch ends (DWA), stops at the
        first non-finite task loss, naming the task (unless a NonFiniteLossGuard is given), and
        reports class ids a task does not have as one :class:`LabelError` line."""
        callbacks = [*(callbacks or []), _BalancerEpochEnd()]
        if not any(isinstance(c, NonFiniteLossGuard) for c in callbacks):
            callbacks.append(NonFiniteLossGuard(self.task_names))
        with label_errors():
            return super().fit(*args, callbacks=callbacks, **kwargs)

    def evaluate(self, *args, **kwargs):
        with label_errors():
            return super().evaluate(*args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 workaround (mtl_keras.training.distribute.symbolic_build_needed)
        if symbolic_build_needed(self):
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------ serving
    def predict_step(self, data):
        """What the served model returns: each task's ``serve`` outputs (probabilities, unit
        normals, metric depth, class maps), keyed ``"{task}"`` for a task with one output and
        ``"{task}_{name}"`` otherwise. Raw outputs: ``model.network.predict``."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return served_outputs(self._specs, self.network(x, training=False))

    def export(self, filepath, format="tf_saved_model", verbose=None, *, image_size=None, **kwargs):
        """Write the SavedModel ``mtl-keras export`` writes, atomically: ``serving_default``
        (uint8 images ``[B, H, W, 3]`` of any size in, every task's served outputs at that size
        out) and ``metadata`` (task and class names).

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
        write_saved_model(self.network, self._specs, filepath, image_size=size)
