"""The objective of a training step, everything in it but the balancer's weights, in one place.

Per task, the loss of its output plus its deep-supervision outputs ``"{task}/{tag}"``: these are
what the balancer weighs. Outside the balancer, added unweighted by it:

* the auxiliary tasks' terms (tasks supervised only through deep-supervision outputs, as PAD-Net's
  and MTI-Net's) times their fixed weights;
* the network's own losses (``add_loss``, e.g. the sluice networks' subspace orthogonality, and
  weight regularisers; weight decay is the optimizer's);
* the :class:`ObjectiveTerm` objects given to the model (ASTMT's adversarial discriminator).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras.architectures.base import is_auxiliary, task_of, task_specs_of
from mtl_keras.tasks import TaskSpec, resolve
from mtl_keras.training import replicas


class LabelError(ValueError):
    """A batch's labels do not match the model's tasks or outputs."""


class ObjectiveTerm(keras.layers.Layer):
    """A term of the objective outside the balancer, computed from the step's tensors.

    A term is a layer, so its variables (a discriminator's) train, save and mirror with the
    model's. :meth:`bind` is called once by the model; :meth:`compute` on every training step,
    inside the gradient tape.

    Attributes:
        log_names: the names of the values :meth:`compute` logs (as training metrics).
    """

    log_names: tuple[str, ...] = ()

    def bind(self, network: keras.Model, specs: Mapping[str, TaskSpec], path: str, balancer):
        """Check the network, the gradient path and the balancer; return ``{name: tensor of
        the network}`` that :meth:`compute` reads (its "taps"), computed by the step's forward
        pass."""
        return {}

    def compute(self, x, y, taps: Mapping, task_loss, step) -> tuple[tf.Tensor, dict]:
        """``(loss of this replica's batch, {log name: value})``.

        Args:
            x, y: the batch; taps: the tensors :meth:`bind` asked for, of this forward pass.
            task_loss: ``task_loss(task, label, prediction) -> scalar``, the task's own loss.
            step: the optimizer's iteration counter.
        """
        raise NotImplementedError


@dataclasses.dataclass
class Losses:
    """What the objective gives one forward pass.

    Attributes:
        per_task: each task's loss as its own tensor (its gradient is taken alone: the gradient
            of a slice of a stack sends zeros back through every other task's branch).
        stacked: the same as a (T,) tensor.
        terms: every output's loss term by output key (auxiliary tasks' included).
        extra: the sum of what is added outside the balancer, or None.
        logs: the objective terms' logged values.
    """

    per_task: list
    stacked: tf.Tensor
    terms: dict
    extra: tf.Tensor | None
    logs: dict


class Objective:
    """The task losses and every term added outside the balancer.

    Args:
        specs: the balanced tasks' TaskSpecs.
        auxiliary: ``{task: (TaskSpec, weight)}`` of the auxiliary tasks.
        outputs: the network's output keys.
        terms: the :class:`ObjectiveTerm` objects (bound by the model).
    """

    def __init__(self, specs, auxiliary, outputs, terms=()):
        self.specs = dict(specs)
        self.auxiliary = dict(auxiliary)
        self.deep = [k for k in outputs if is_auxiliary(k)]
        self.terms = list(terms)

    def check_labels(self, y) -> None:
        if not isinstance(y, Mapping):
            raise LabelError(
                f"labels must be a dict keyed by task name {list(self.specs)}, got "
                f"{type(y).__name__}"
            )
        missing = [t for t in (*self.specs, *self.auxiliary) if t not in y]
        if missing:
            raise LabelError(
                f"label for task(s) {missing} missing from the batch; the batch has labels for "
                f"{sorted(y)}; give a label per task (auxiliary tasks included) or build the "
                "model without those tasks"
            )

    def spec_of(self, key: str) -> TaskSpec:
        task = task_of(key)
        return self.specs[task] if task in self.specs else self.auxiliary[task][0]

    def loss(self, key: str, label, prediction) -> tf.Tensor:
        """The loss of output ``key`` (a task or a deep-supervision output), float32."""
        spec = self.spec_of(key)
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
        with tf.control_dependencies(class_id_checks(spec, label)):
            loss = spec.loss(label, prediction, count_mean=replicas.replica_mean)
        return tf.cast(loss, tf.float32)

    def task_losses(self, y, outputs) -> tuple[list, dict]:
        """Each task's loss (deep supervision included) as its own tensor, and every term by
        output key."""
        self.check_labels(y)
        terms = {k: self.loss(k, y[task_of(k)], outputs[k]) for k in outputs}
        per_task = [tf.add_n([v for k, v in terms.items() if task_of(k) == t]) for t in self.specs]
        return per_task, terms

    def __call__(self, x, y, outputs, taps, network_losses, step) -> Losses:
        """The losses of one forward pass (inside the step's tapes)."""
        per_task, terms = self.task_losses(y, outputs)
        parts = [
            self.auxiliary[task_of(k)][1] * terms[k]
            for k in self.deep
            if task_of(k) in self.auxiliary
        ]
        parts += [tf.cast(v, tf.float32) for v in network_losses]
        logs = {}
        for term in self.terms:
            value, term_logs = term.compute(x, y, taps, self.loss, step)
            parts.append(value)
            logs.update(term_logs)
        extra = tf.add_n(parts) if parts else None
        return Losses(per_task, tf.stack(per_task), terms, extra, logs)


def class_id_checks(spec: TaskSpec, label) -> list:
    """In-graph refusal of class ids a classification task does not have (ids outside
    ``0 .. num_classes - 1`` that are not the ignore value): the loss would train on them."""
    if spec.num_classes is None:
        return []
    ids = tf.cast(label[..., 0], tf.int32)
    bad = tf.logical_or(ids < 0, ids >= spec.num_classes)
    if spec.ignore_value is not None:
        bad = tf.logical_and(bad, ids != spec.ignore_value)
    ignore = "" if spec.ignore_value is None else f", {spec.ignore_value} = ignore"
    message = (
        f"task {spec.name!r}: a label batch holds class ids outside 0..{spec.num_classes - 1}"
        f"{ignore}; relabel those pixels or raise the task's num_classes"
    )
    return [tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [message])]


@contextlib.contextmanager
def label_errors():
    """Turn a failed in-graph label check (:func:`class_id_checks`) into a :class:`LabelError`
    of one line, in place of TensorFlow's graph traceback."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        found = re.search(r"assertion failed: \[(task .*?)\]\n", error.message)
        if found is None:
            raise
        raise LabelError(found.group(1).replace("\\'", "'")) from None


def network_tasks(network, tasks, auxiliary_tasks, auxiliary_weights) -> tuple[dict, dict]:
    """The balanced tasks' TaskSpecs and the auxiliary tasks' ``{task: (TaskSpec, weight)}``
    to train ``network`` with (by default those it was built with, from its TaskOutput markers).
    """
    main = [k for k in network.output if not is_auxiliary(k)]
    recorded = task_specs_of(network)
    specs = specs_for(network, tasks, main, recorded)
    if not auxiliary_tasks:  # the auxiliary tasks the network was built with, if recorded
        auxiliary_tasks = [s for t, s in recorded.items() if t not in main]
    return specs, auxiliary_specs(network, specs, auxiliary_tasks, auxiliary_weights)


def specs_for(network, tasks, main, recorded) -> dict[str, TaskSpec]:
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


def auxiliary_specs(network, specs, auxiliary_tasks, weights) -> dict[str, tuple]:
    """``{task: (TaskSpec, weight)}`` of the auxiliary tasks, checked against the network."""
    aux = resolve(auxiliary_tasks) if auxiliary_tasks else {}
    overlap = [t for t in aux if t in specs]
    if overlap:
        raise ValueError(
            f"auxiliary_tasks {overlap} are also main tasks of the network; a task is either "
            "predicted (and balanced) or auxiliary (deep supervision only)"
        )
    weights = dict(weights or {})
    unknown = [t for t in weights if t not in aux]
    if unknown:
        raise ValueError(
            f"auxiliary_weights for {unknown}, which are not auxiliary_tasks {list(aux)}"
        )
    deep = {task_of(k) for k in network.output if is_auxiliary(k)}
    bad = sorted(t for t in deep if t not in specs and t not in aux)
    if bad:
        raise ValueError(
            f"the network has deep-supervision outputs for {bad}, which are neither its "
            f"tasks {list(specs)} nor declared auxiliary_tasks {list(aux)}; pass "
            "them as auxiliary_tasks"
        )
    unused = [t for t in aux if t not in deep]
    if unused:
        raise ValueError(
            f"auxiliary_tasks {unused} have no deep-supervision output in the network "
            f"(outputs: {list(network.output)}); build the network with these auxiliary tasks"
        )
    return {t: (spec, float(weights.get(t, 1.0))) for t, spec in aux.items()}
