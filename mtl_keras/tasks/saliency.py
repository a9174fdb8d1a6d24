"""Saliency: BCE with a per-batch automatic positive weight, maxF over thresholds."""

from __future__ import annotations

from mtl_keras.tasks._common import binary_task
from mtl_keras.tasks.base import TaskSpec


def saliency(beta2: float = 1.0) -> TaskSpec:
    """Binary saliency maps (labels binarised at 0.5).

    Loss: balanced BCE whose positive weight is the fraction of negatives in the batch. Metrics:
    maxF over 15 thresholds in [0.2, 0.9] with ``beta2`` (1 as the survey's code, 0.3 in the
    saliency literature) and the max mean IoU over the same thresholds. Under an evaluation
    protocol the primary metric is the protocol's (``survey``: mIoU, as the survey's
    ``calculate_multi_task_performance``; ``invpt``: maxF) and binarisation is ``pred > t``.

    Example:
        >>> saliency().primary_metric
        'max_f'
    """
    from mtl_keras.metrics import SaliencyMaxF

    def protocol_metrics(protocol):
        return [
            SaliencyMaxF(
                protocol.saliency_thresholds,
                beta2=beta2,
                name="saliency_maxf",
                strict=protocol.saliency_strict,
            )
        ]

    return binary_task(
        "saliency",
        pos_weight=None,
        metrics=lambda: [SaliencyMaxF(beta2=beta2, name="saliency_maxf")],
        higher_is_better={"max_f": True, "miou": True},
        primary="max_f",
        protocol_metrics=protocol_metrics,
        protocol_primary=lambda protocol: protocol.saliency_primary,
    )
