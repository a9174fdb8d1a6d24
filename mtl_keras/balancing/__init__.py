"""Task balancing: ``get(name, **kwargs)`` and ``available()``.

Loss-level balancers map the task losses to one objective; gradient-level balancers map per-task
gradients of the shared part (variables or representation) to one update, and can be used on their
own through ``get(name).aggregate(jacobian)``.
"""

from __future__ import annotations

from mtl_keras._names import canonical
from mtl_keras.balancing._linalg import gramian_statistics
from mtl_keras.balancing.aligned_mtl import AlignedMTL
from mtl_keras.balancing.auto_lambda import AutoLambda
from mtl_keras.balancing.base import Balancer, GradientBalancer, LossBalancer
from mtl_keras.balancing.cagrad import CAGrad
from mtl_keras.balancing.config import ConFIG
from mtl_keras.balancing.cosmos import COSMOS
from mtl_keras.balancing.cr_mogm import CRMOGM
from mtl_keras.balancing.db_mtl import DBMTL
from mtl_keras.balancing.dtp import DynamicTaskPrioritization
from mtl_keras.balancing.dualproj import DualProj
from mtl_keras.balancing.dwa import DynamicWeightAverage
from mtl_keras.balancing.excess_mtl import ExcessMTL
from mtl_keras.balancing.fairgrad import FairGrad
from mtl_keras.balancing.famo import FAMO
from mtl_keras.balancing.fixed import FixedWeights
from mtl_keras.balancing.gls import GeometricLossStrategy
from mtl_keras.balancing.graddrop import GradDrop
from mtl_keras.balancing.gradnorm import GradNorm
from mtl_keras.balancing.gradvac import GradVac
from mtl_keras.balancing.imtl_g import IMTLG
from mtl_keras.balancing.imtl_l import IMTLL
from mtl_keras.balancing.krum import Krum
from mtl_keras.balancing.mgda import MGDA, min_norm_weights
from mtl_keras.balancing.moco import MoCo
from mtl_keras.balancing.modo import MoDo
from mtl_keras.balancing.nash_mtl import NashMTL
from mtl_keras.balancing.pbi import PenaltyBoundaryIntersection
from mtl_keras.balancing.pcd import PCD
from mtl_keras.balancing.pcgrad import PCGrad
from mtl_keras.balancing.rlw import RandomLossWeighting
from mtl_keras.balancing.sdmgrad import SDMGrad
from mtl_keras.balancing.stch import SmoothTchebycheff
from mtl_keras.balancing.trimmed_mean import TrimmedMean
from mtl_keras.balancing.uncertainty import UncertaintyWeighting
from mtl_keras.balancing.upgrad import UPGrad

BALANCERS: dict[str, type[Balancer]] = {
    # loss level
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
    "dtp": DynamicTaskPrioritization,
    "rlw": RandomLossWeighting,
    "gls": GeometricLossStrategy,
    "imtl_l": IMTLL,
    "famo": FAMO,
    "stch": SmoothTchebycheff,
    "pbi": PenaltyBoundaryIntersection,
    "cosmos": COSMOS,
    # gradient level
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "graddrop": GradDrop,
    "gradvac": GradVac,
    "cagrad": CAGrad,
    "imtl_g": IMTLG,
    "nash_mtl": NashMTL,
    "aligned_mtl": AlignedMTL,
    "upgrad": UPGrad,
    "dualproj": DualProj,
    "config": ConFIG,
    "db_mtl": DBMTL,
    "fairgrad": FairGrad,
    "excess_mtl": ExcessMTL,
    "pcd": PCD,
    "krum": Krum,
    "trimmed_mean": TrimmedMean,
    "moco": MoCo,
    "cr_mogm": CRMOGM,
    # gradient level, several mini-batches per step
    "sdmgrad": SDMGrad,
    "modo": MoDo,
    # loss level, weights meta-learned on a held-out mini-batch (the bilevel path)
    "auto_lambda": AutoLambda,
}

# names from papers and LibMTL that differ from the registered ones by more than case, "-" and "_"
ALIASES = {
    "ew": "fixed",
    "equal_weighting": "fixed",
    "uw": "uncertainty",
    "uncertainty_weighting": "uncertainty",
    "dynamic_weight_average": "dwa",
    "dynamic_task_prioritization": "dtp",
    "random_loss_weighting": "rlw",
    "geometric_loss_strategy": "gls",
    "gradient_vaccine": "gradvac",
    "priority_constrained_descent": "pcd",
    "trmean": "trimmed_mean",
    "smooth_tchebycheff": "stch",
    "penalty_boundary_intersection": "pbi",
    "autol": "auto_lambda",
}


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(BALANCERS)


def method_name(balancer: Balancer) -> str:
    """The registered name of ``balancer``'s method (its layer name may carry a ``_N`` suffix)."""
    for name, cls in BALANCERS.items():
        if type(balancer) is cls:
            return name
    return balancer.name


def get(name: str | Balancer, **kwargs) -> Balancer:
    """Instantiate a balancer by name (an instance is returned as is).

    Case, ``-`` and ``_`` aside (``"Nash-MTL"``), or one of :data:`ALIASES` (``"uw"``).
    """
    if isinstance(name, Balancer):
        if kwargs:
            raise ValueError("keyword arguments are only accepted with a balancer name")
        return name
    return BALANCERS[canonical("balancer", name, available(), ALIASES)](**kwargs)


__all__ = [
    "ALIASES",
    "BALANCERS",
    "COSMOS",
    "CRMOGM",
    "DBMTL",
    "FAMO",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "PCD",
    "MoCo",
    "MoDo",
    "AlignedMTL",
    "AutoLambda",
    "Balancer",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "DynamicTaskPrioritization",
    "DynamicWeightAverage",
    "ExcessMTL",
    "FairGrad",
    "FixedWeights",
    "GeometricLossStrategy",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientBalancer",
    "Krum",
    "LossBalancer",
    "NashMTL",
    "PCGrad",
    "PenaltyBoundaryIntersection",
    "RandomLossWeighting",
    "SDMGrad",
    "SmoothTchebycheff",
    "TrimmedMean",
    "UPGrad",
    "UncertaintyWeighting",
    "available",
    "get",
    "gramian_statistics",
    "method_name",
    "min_norm_weights",
]
