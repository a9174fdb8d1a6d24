"""Streaming evaluation metrics, Δ_MTL against single-task baselines, and model complexity.

Every metric is a `keras.metrics.Metric` whose state is summed across replicas and whose
``result()`` is a dict of scalar tensors, pooled over the whole evaluation set as in Vandenhende
et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey", TPAMI 2022.
"""

from mtl_keras.metrics.boundary import BoundaryFMeasure, boundary_f_measure
from mtl_keras.metrics.complexity import count_flops, count_macs, count_params
from mtl_keras.metrics.delta import delta_mtl, load_baselines, write_results
from mtl_keras.metrics.depth import DepthErrors
from mtl_keras.metrics.edges import EdgeF
from mtl_keras.metrics.normals import NormalAngleErrors
from mtl_keras.metrics.saliency import SaliencyMaxF
from mtl_keras.metrics.segmentation import MeanIoU, pixel_weights

__all__ = [
    "BoundaryFMeasure",
    "boundary_f_measure",
    "DepthErrors",
    "EdgeF",
    "MeanIoU",
    "NormalAngleErrors",
    "SaliencyMaxF",
    "count_flops",
    "count_macs",
    "count_params",
    "delta_mtl",
    "load_baselines",
    "pixel_weights",
    "write_results",
]
