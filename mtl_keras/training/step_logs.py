"""The trainer's logs: streaming trackers of losses, task weights, gradient statistics and metrics.

The logged ``loss`` is the weighted total in training and the plain sum of task losses in
evaluation (balancer weights change during training and would make it incomparable). Gradient
statistics are per-task gradient norms, pairwise cosine similarities and the number of conflicting
pairs (``grad_norm_{task}``, ``grad_cos_{a}_{b}``, ``grad_conflicts``), from the Gramian of the
per-task gradients. ``{task}_empty_batches`` counts the batches in which a task's loss supervised
no pixel (all labels ignored or invalid), where its loss is exactly 0.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training import replicas
from mtl_keras.training.distribute import reducible_logs


class StepLogs:
    """Every tracker of a :class:`~mtl_keras.training.MultiTaskModel`.

    Args:
        specs: the balanced tasks' TaskSpecs.
        deep: the network's deep-supervision output keys (their terms are logged).
        statistics: track the gradient statistics.
        term_logs: the names the objective terms log.
        train_metrics: also update the task metrics in training.
    """

    def __init__(self, specs, deep, statistics: bool, term_logs=(), train_metrics=False):
        self.specs = dict(specs)
        self.tasks = tuple(self.specs)
        self.deep = tuple(deep)
        self.train_metrics = train_metrics
        self.loss = keras.metrics.Mean(name="loss")
        self.task_losses = {
            k: keras.metrics.Mean(name=f"{k}_loss") for k in (*self.tasks, *self.deep)
        }
        self.weights = {t: keras.metrics.Mean(name=f"{t}_weight") for t in self.tasks}
        names = []
        if statistics:
            names = [f"grad_norm_{t}" for t in self.tasks]
            names += [
                f"grad_cos_{a}_{b}" for i, a in enumerate(self.tasks) for b in self.tasks[i + 1 :]
            ]
            names.append("grad_conflicts")
        self.statistics = {n: keras.metrics.Mean(name=n) for n in names}
        self.terms = {n: keras.metrics.Mean(name=n) for n in term_logs}
        # batches (global, all replicas) in which a task's loss supervised no pixel: its loss is 0
        self.empty = {t: keras.metrics.Sum(name=f"{t}_empty_batches") for t in self.tasks}
        self.task_metrics = {t: s.metrics() for t, s in self.specs.items()}

    @property
    def metrics(self) -> list:
        out = [
            self.loss,
            *self.task_losses.values(),
            *self.weights.values(),
            *self.statistics.values(),
            *self.terms.values(),
            *self.empty.values(),
        ]
        for ms in self.task_metrics.values():
            out.extend(ms)
        return out

    def train(self, record, update, y, learning_rate) -> dict:
        """Update with a training step's record and update; the step's logs."""
        losses, weights = record.losses, tf.stop_gradient(update.weights)
        total = tf.reduce_sum(weights * losses.stacked)
        if losses.extra is not None:
            total += tf.stop_gradient(losses.extra)
        if update.gramian is not None and self.statistics:
            self._statistics(update.gramian)
        for i, t in enumerate(self.tasks):
            self.weights[t].update_state(weights[i])
        for name, value in losses.logs.items():
            self.terms[name].update_state(tf.stop_gradient(value))
        logs = self._losses(total, losses.stacked, losses.terms, y)
        logs.update({m.name: m.result() for m in self.weights.values()})
        logs.update({m.name: m.result() for m in self.statistics.values()})
        logs.update({m.name: m.result() for m in self.terms.values()})
        logs["learning_rate"] = tf.convert_to_tensor(learning_rate)
        if self.train_metrics:
            logs.update(self._task_metrics(y, record.outputs))
        return reducible_logs(logs)

    def test(self, stacked, terms, y, outputs) -> dict:
        """Update with an evaluation batch; the step's logs."""
        logs = self._losses(tf.reduce_sum(stacked), stacked, terms, y)
        logs.update(self._task_metrics(y, outputs))
        return reducible_logs(logs)

    def result(self) -> dict:
        """Every tracker's pooled value (replica-summed states)."""
        logs = {m.name: m.result() for m in (self.loss, *self.task_losses.values())}
        for group in (self.weights, self.statistics, self.terms, self.empty):
            logs.update({m.name: m.result() for m in group.values()})
        for t, spec in self.specs.items():
            for m in self.task_metrics[t]:
                logs.update({spec.metric_id(k): v for k, v in m.result().items()})
        return reducible_logs(logs)

    def _losses(self, total, stacked, terms, y) -> dict:
        self.loss.update_state(total)
        for i, t in enumerate(self.tasks):
            self.task_losses[t].update_state(stacked[i])
            valid = replicas.replica_sum(
                tf.cast(self.specs[t].count_valid_pixels(y[t]), tf.float32)
            )
            # every replica counts the global batch; Keras sums the replicas' metric states
            self.empty[t].update_state(replicas.share(tf.cast(tf.equal(valid, 0.0), tf.float32)))
        for k in self.deep:
            self.task_losses[k].update_state(terms[k])
        trackers = (self.loss, *self.task_losses.values(), *self.empty.values())
        return {m.name: m.result() for m in trackers}

    def _task_metrics(self, y, outputs) -> dict:
        logs = {}
        for t, spec in self.specs.items():
            pred = spec.activate(outputs[t])
            for m in self.task_metrics[t]:
                m.update_state(y[t], pred)
                logs.update({spec.metric_id(k): v for k, v in m.result().items()})
        return logs

    def _statistics(self, gramian) -> None:
        stats = balancing.gramian_statistics(tf.stop_gradient(gramian))
        for i, t in enumerate(self.tasks):
            self.statistics[f"grad_norm_{t}"].update_state(stats["norms"][i])
            for j in range(i + 1, len(self.tasks)):
                name = f"grad_cos_{t}_{self.tasks[j]}"
                self.statistics[name].update_state(stats["cosine"][i, j])
        self.statistics["grad_conflicts"].update_state(tf.cast(stats["conflicts"], tf.float32))
