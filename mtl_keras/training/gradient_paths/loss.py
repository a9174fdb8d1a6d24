"""The loss path: the balancer combines the task losses into one objective, one backward pass.

``objective = balancer.combine(L) / R + extra / R`` (``R`` replicas, see
:mod:`~mtl_keras.training.replicas`); its gradient, loss-scaled, goes to the optimizer as is.
With gradient statistics on, T more backward passes give the Gramian of the per-task gradients:
of the shared representation when the network declares one (through the heads only), else of the
shared variables.
"""

from __future__ import annotations

import tensorflow as tf

from mtl_keras.training import replicas
from mtl_keras.training.gradient_paths.base import (
    GradientPath,
    Record,
    Update,
    gradient_statistics_gramian,
)


class LossPath(GradientPath):
    name = "loss"

    def __init__(self, network, sharing, *args, **kwargs):
        super().__init__(network, sharing, *args, **kwargs)
        self.stats_source = None
        if self.statistics:
            if sharing.representation_layers:
                self.stats_source = "representation"
            elif sharing.shared_variables:
                self.stats_source = "shared"
            else:
                raise ValueError(
                    "gradient_statistics=True needs shared variables or a declared "
                    "SharedRepresentation; the network has neither"
                )
            self._forward = self._make_forward(self.stats_source == "representation")

    def forward(self, x, y, step) -> Record:
        with tf.GradientTape(persistent=self.statistics) as tape:
            outputs, rep, taps, network_losses = self.run(x)
            losses, global_losses, shares, extra = self.losses(
                x, y, outputs, taps, network_losses, step
            )
            objective, weights = self.balancer.combine(losses.stacked, global_losses, step)
            objective = replicas.share(objective)
            if extra is not None:
                objective = objective + extra
        return Record(
            outputs, losses, global_losses, (tape,), shares, extra, rep, objective, weights
        )

    def update(self, record: Record, variables, scaling, step) -> Update:
        (tape,) = record.tapes
        grads = scaling.scaled_gradients(tape, record.objective, variables)
        return Update(
            grads, record.weights, self.statistics_gramian(record, variables, scaling), True
        )

    def statistics_gramian(self, record: Record, variables, scaling):
        """The Gramian of the per-task gradients for the statistics (None when they are off)."""
        (tape,) = record.tapes
        if self.stats_source == "representation":
            return gradient_statistics_gramian(
                tape, record.shares, record.representation, scaling, summed_rows=False
            )
        if self.stats_source == "shared":
            shared = {id(v) for v in self.sharing.shared_variables}
            sources = [v for v in variables if id(v) in shared]
            return gradient_statistics_gramian(
                tape, record.shares, sources, scaling, summed_rows=True
            )
        return None
