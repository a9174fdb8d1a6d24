"""Evaluation as the survey does it, and comparison tables of runs.

* `mtl_keras.evaluation.protocol`: scoring at the original resolution under a named protocol
  (``survey`` or ``invpt``, `PROTOCOLS`) with pooled metrics (`evaluate`, `evaluate_to_file`,
  `ProtocolEvaluator`) and PNG grids of predictions (`prediction_grid`).
* `mtl_keras.evaluation.compare`: the Markdown table of runs with each task's metric, params,
  FLOPs and Δ_MTL, a PNG bar chart of Δ_MTL and per-task PNG grids of every run's predictions
  (``compare.compare``, ``compare.prediction_grids``; ``mtl-keras compare`` through
  ``compare.add_arguments`` / ``compare.run``). The module, not its function, is the
  package's ``compare`` attribute.
* `mtl_keras.evaluation.study`: a study over seeds (mean ± std, Welch's test against a
  reference run, a Δ_MTL chart with error bars, the Pareto plot of `mtl_keras.evaluation.pareto`)
  and its page, rebuilt from one results file (``mtl-keras compare RESULTS --page PAGE``).
"""

from mtl_keras.evaluation import compare
from mtl_keras.evaluation.compare import delta_chart, read_run
from mtl_keras.evaluation.protocol import (
    PROTOCOLS,
    Protocol,
    ProtocolEvaluator,
    SurveyEvaluator,
    evaluate,
    evaluate_to_file,
    get_protocol,
    prediction_grid,
)

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "ProtocolEvaluator",
    "SurveyEvaluator",
    "compare",
    "delta_chart",
    "evaluate",
    "evaluate_to_file",
    "get_protocol",
    "prediction_grid",
    "read_run",
]
