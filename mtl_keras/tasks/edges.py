"""Edge detection: balanced BCE with positive weight 0.95, boundary F-measure."""

from __future__ import annotations

from mtl_keras.tasks._common import binary_task
from mtl_keras.tasks.base import TaskSpec


def edges(pos_weight: float = 0.95, threshold: float = 0.5, tolerance: int = 1) -> TaskSpec:
    """Binary edge maps (HED-style balanced loss, Xie & Tu, ICCV 2015; survey weight 0.95).

    The streaming metric is a boundary F-measure at a fixed threshold with a small pixel tolerance;
    an evaluation protocol scores the BSDS odsF / oisF / AP (its primary metric is odsF) with the
    protocol's tolerance, thresholds and interpolation.

    Example:
        >>> edges().channels
        1
    """
    from mtl_keras.metrics import EdgeF
    from mtl_keras.metrics.boundary import BoundaryFMeasure

    def protocol_metrics(protocol):
        # SEISM on saved 8-bit maps: pred / 255 >= t, thinned, BSDS matching
        return [
            BoundaryFMeasure(
                protocol.edge_max_dist,
                protocol.edge_thresholds,
                interpolate=protocol.edge_interpolate,
            )
        ]

    return binary_task(
        "edges",
        pos_weight=pos_weight,
        metrics=lambda: [EdgeF(threshold=threshold, tolerance=tolerance, name="edges_f")],
        higher_is_better={
            "f": True,
            "precision": True,
            "recall": True,
            "ods_f": True,
            "ois_f": True,
            "ap": True,
        },
        primary="f",
        protocol_metrics=protocol_metrics,
        protocol_primary=lambda protocol: "ods_f",
    )
