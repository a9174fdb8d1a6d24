"""Δ_MTL, the average relative change of a multi-task model over single-task baselines.

Also reads and writes the result JSON files that hold the baselines:
``{"task": "semseg", "metrics": {"semseg_miou": 0.43, ...}, ...extra}``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PathLike = str | os.PathLike


def delta_mtl(
    results: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δ_MTL in percent: the mean signed relative change over the single-task baselines.

    Δ_MTL = (100 / T) Σ_i (−1)^{l_i} (M_m,i − M_b,i) / M_b,i, where l_i = 1 when lower is better
    for metric i (Eq. 10 of Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A
    Survey", TPAMI 2022; introduced by Maninis et al., "Attentive Single-Tasking of Multiple
    Tasks", CVPR 2019). Positive means the multi-task model is better on average.

    Args:
        results: metric id -> value of the multi-task model, e.g. ``{"semseg_miou": 0.45}``.
        baselines: metric id -> value of the single-task model (see `load_baselines`).
        higher_is_better: metric id -> direction; exactly these T metrics enter the average.

    Returns:
        Δ_MTL in percent.

    Raises:
        ValueError: ``higher_is_better`` is empty, a metric is missing from ``results`` or
            ``baselines``, or a baseline is zero.

    Example:
        >>> value = delta_mtl({"semseg_miou": 0.44, "depth_rmse": 0.45},
        ...                   {"semseg_miou": 0.40, "depth_rmse": 0.50},
        ...                   {"semseg_miou": True, "depth_rmse": False})
        >>> round(value, 6)  # +10 % mIoU and 10 % lower RMSE
        10.0
    """
    if not higher_is_better:
        raise ValueError(
            "delta_mtl needs at least one metric in higher_is_better, e.g. "
            "{'semseg_miou': True, 'depth_rmse': False}; got an empty mapping."
        )
    total = 0.0
    for key, higher in higher_is_better.items():
        for values, what in ((results, "results"), (baselines, "baselines")):
            if key not in values:
                raise ValueError(
                    f"delta_mtl: metric {key!r} is missing from the {what}; available: "
                    f"{sorted(values)}. Evaluate that metric, or remove it from higher_is_better."
                )
        base = float(baselines[key])
        if base == 0.0:
            raise ValueError(
                f"delta_mtl: the baseline of {key!r} is 0, so its relative change is undefined. "
                "Check the single-task result file, or leave this metric out of higher_is_better."
            )
        change = (float(results[key]) - base) / base
        total += change if higher else -change
    return 100.0 * total / len(higher_is_better)


def _result_files(paths_or_dir: PathLike | Sequence[PathLike]) -> list[tuple[str, bool]]:
    """(file, given explicitly) pairs; a folder contributes every ``*.json`` below it."""
    if isinstance(paths_or_dir, (str, os.PathLike)):
        text = os.fspath(paths_or_dir)
        items = [p for p in text.split(",") if p] if "," in text else [text]
    else:
        items = [os.fspath(p) for p in paths_or_dir]
    files = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "**", "*.json"), recursive=True))
            files.extend((f, False) for f in found)
        elif os.path.isfile(item):
            files.append((item, True))
        else:
            raise FileNotFoundError(
                f"load_baselines: {item!r} is neither a result JSON file nor a folder. Pass the "
                "single-task result files (written by write_results) or the folder holding them."
            )
    return files


def load_baselines(paths_or_dir: PathLike | Sequence[PathLike]) -> dict[str, float]:
    """Merge the ``metrics`` of single-task result JSON files into one ``{metric_id: value}``.

    Args:
        paths_or_dir: a result file, a folder (searched recursively for ``*.json``), a
            comma-separated string of these, or a sequence of them. Inside folders, JSON files
            without a ``metrics`` mapping (configs, recipes) are skipped; a file named explicitly
            must have one.

    Returns:
        All metrics of all files. A metric id that appears in several files with different values
        (e.g. each run's ``loss``) is ambiguous: it is left out, with a warning naming the files.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: an explicitly named file is not a result file, or no metric was found.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> _ = write_results(os.path.join(d, "semseg.json"), "semseg", {"semseg_miou": 0.4})
        >>> load_baselines(d)
        {'semseg_miou': 0.4}
    """
    merged: dict[str, float] = {}
    source: dict[str, str] = {}
    conflicts: dict[str, set[str]] = {}
    for path, explicit in _result_files(paths_or_dir):
        with open(path) as f:
            try:
                content = json.load(f)
            except json.JSONDecodeError as err:
                if not explicit:
                    continue
                raise ValueError(f"load_baselines: {path} is not valid JSON ({err}).") from err
        metrics = content.get("metrics") if isinstance(content, dict) else None
        if not isinstance(metrics, dict):
            if not explicit:
                continue
            raise ValueError(
                f"load_baselines: {path} has no 'metrics' mapping; expected "
                '{"task": ..., "metrics": {"semseg_miou": 0.43, ...}} as written by write_results.'
            )
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key in merged and not math.isclose(merged[key], value, rel_tol=1e-6):
                conflicts.setdefault(key, {source[key]}).add(path)
            merged.setdefault(key, float(value))
            source.setdefault(key, path)
    for key in conflicts:
        merged.pop(key)
    if conflicts:
        detail = "; ".join(f"{k}: {sorted(v)}" for k, v in sorted(conflicts.items()))
        warnings.warn(
            f"load_baselines: metrics with different values in several files were left out "
            f"({detail}). Pass only the files that should provide them.",
            stacklevel=2,
        )
    if not merged:
        raise ValueError(
            f"load_baselines: no metric found in {paths_or_dir!r}. Expected result JSON files "
            '{"task": ..., "metrics": {...}} as written by write_results.'
        )
    return merged


def _to_json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy()).tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def write_results(path: PathLike, task_or_name: str, metrics: Mapping[str, Any], **extra) -> str:
    """Write ``{"task": task_or_name, "metrics": {...}, **extra}`` as JSON, atomically.

    The file is written to a hidden temporary file in the same folder and moved into place with
    ``os.replace``, so a reader never sees a partial file. Metric values are stored as floats;
    numpy and tensor values in ``extra`` are converted.

    Args:
        path: destination file; missing folders are created.
        task_or_name: the task (single-task runs) or the run name.
        metrics: metric id -> scalar value.
        **extra: further JSON fields (not ``task``).

    Returns:
        The path written.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "r.json")
        >>> p = write_results(path, "depth", {"depth_rmse": 0.6})
        >>> load_baselines(p)
        {'depth_rmse': 0.6}
    """
    if "task" in extra:
        raise ValueError(
            "write_results: an extra field may not be named 'task' (it holds task_or_name); "
            "rename it."
        )
    path = os.fspath(path)
    payload = {
        "task": task_or_name,
        "metrics": {str(k): float(v) for k, v in metrics.items()},
        **extra,
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=_to_json)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
