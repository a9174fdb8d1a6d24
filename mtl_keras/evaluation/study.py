"""A study over seeds: mean ± std of every metric and of Δ_MTL, a test against a reference run,
a Δ_MTL chart with error bars, a Pareto plot of Δ_MTL against FLOPs, and the page, all rebuilt
from one results file.

The results file (JSON, written by ``benchmarks/synthetic_comparison.py`` after every run) is::

    {"study": {"command": ..., "date": ..., "machine": {...}, "settings": {...},
               "reference": "hard_sharing", "alpha": 0.05, "seeds": [0, 1, 2]},
     "records": [{"run": "hs_pcgrad_s1", "group": "hs_pcgrad", "seed": 1,
                  "kind": "balancer", "description": ..., "tasks": [...],
                  "metrics": {...}, "params": ..., "flops": ...,
                  "trivial_baseline": {...}, "recipe": {...}, "wall_s": ..., "cpu_s": ...},
                 ...]}

A *group* is one configuration (``single_semseg``, ``mtan``, ``hs_pcgrad``); its records are its
seeds. Δ_MTL (Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A Survey",
TPAMI 2022, Eq. 10) of each record is taken against the single-task baselines averaged over their
seeds, so that the spread of a group's Δ_MTL is the spread of that group alone.

A group is marked when its per-seed Δ_MTL differs from the reference group's by Welch's unequal
variances t-test (Welch, "The generalization of 'Student's' problem when several different
population variances are involved", Biometrika 1947) at level ``alpha``, two-sided. The test is
done without a correction for multiple comparisons: of K groups tested at α = 0.05, about 0.05 K
are marked by chance alone, and the page says so.

``mtl-keras compare RESULTS.json --page PAGE.md`` rebuilds the page and its figures from the file
alone (`rebuild`), without training.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import textwrap
from collections.abc import Mapping, Sequence

from mtl_keras.evaluation.compare import (
    PERCENT_KEYS,
    RunResult,
    _format_count,
    _format_value,
    delta_chart,
    primary_metrics,
)
from mtl_keras.evaluation.pareto import pareto_chart, pareto_front
from mtl_keras.metrics.significance import welch_test

BEGIN = "<!-- study: generated from here -->"
END = "<!-- study: generated up to here -->"
KINDS = ("single_task", "architecture", "balancer")


# ---------------------------------------------------------------------------------------------
# the results file


def is_results_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a study results file (a JSON object with ``study`` and ``records``)."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(content, dict) and "study" in content and "records" in content


def load_results(path: str | os.PathLike) -> dict:
    """Read a results file; a missing file is an empty study.

    Raises:
        ValueError: the file is not JSON or not a study results file.
    """
    if not os.path.exists(path):
        return {"study": {}, "records": []}
    with open(path) as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); restore it from git or delete it to run the "
                "study afresh"
            ) from err
    if not (isinstance(content, dict) and isinstance(content.get("records"), list)):
        raise ValueError(f"{path} is not a study results file (no 'records' list)")
    content.setdefault("study", {})
    return content


def save_results(path: str | os.PathLike, content: Mapping) -> None:
    """Write ``content`` to ``path`` atomically (a temporary file renamed over it)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".results-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def find_record(content: Mapping, run: str) -> dict | None:
    return next((r for r in content["records"] if r.get("run") == run), None)


def put_record(content: dict, record: Mapping) -> None:
    """Add ``record``, replacing one of the same ``run``."""
    content["records"] = [r for r in content["records"] if r.get("run") != record["run"]]
    content["records"].append(dict(record))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


# ---------------------------------------------------------------------------------------------
# summary


def _as_run(record: Mapping) -> RunResult:
    return RunResult(
        name=record["run"],
        path="",
        tasks=tuple(record["tasks"]),
        metrics={k: float(v) for k, v in record["metrics"].items()},
        params=record.get("params"),
        flops=record.get("flops"),
        trivial={k: float(v) for k, v in (record.get("trivial_baseline") or {}).items()},
    )


def groups(content: Mapping) -> dict[str, list[dict]]:
    """``{group: records sorted by seed}``, in the order single-task, architectures, balancers
    (each in the order first recorded)."""
    found: dict[str, list[dict]] = {}
    for kind in KINDS:
        for record in content["records"]:
            if record.get("kind", "architecture") == kind:
                found.setdefault(record["group"], []).append(record)
    return {g: sorted(rs, key=lambda r: r["seed"]) for g, rs in found.items()}


def summarize(content: Mapping) -> tuple[list[dict], dict[str, tuple[str, bool]]]:
    """One row per group, plus the trivial predictors' row, and the primary metric of every task.

    Each row: ``group``, ``kind``, ``description``, ``tasks``, ``seeds``, ``values`` ``{task:
    (mean, std)}``, ``params``, ``flops``, ``deltas`` (per seed), ``delta`` / ``delta_std``
    (mean / std over seeds, None without baselines), ``test`` (Welch's ``(t, dof, p)`` against
    the reference group, or None) and ``mark`` (``▲``/``▼`` better/worse at ``alpha``, ``ref``
    for the reference).
    """
    from mtl_keras.metrics import delta_mtl

    by_group = groups(content)
    study = content.get("study", {})
    reference, alpha = study.get("reference", "hard_sharing"), float(study.get("alpha", 0.05))
    runs = [_as_run(r) for rs in by_group.values() for r in rs]
    if not runs:
        return [], {}
    primary = primary_metrics(runs)
    baselines: dict[str, float] = {}
    for records in by_group.values():
        if records[0].get("kind") == "single_task" and len(records[0]["tasks"]) == 1:
            metric = primary[records[0]["tasks"][0]][0]
            values = [float(r["metrics"][metric]) for r in records if metric in r["metrics"]]
            if values:
                baselines[metric] = statistics.fmean(values)

    def deltas_of(records):
        out = []
        for record in records:
            directions = {primary[t][0]: primary[t][1] for t in record["tasks"]}
            if all(m in baselines and m in record["metrics"] for m in directions):
                out.append(delta_mtl(record["metrics"], baselines, directions))
        return out

    rows = []
    for group, records in by_group.items():
        first = records[0]
        values = {}
        for task in first["tasks"]:
            metric = primary[task][0]
            seen = [float(r["metrics"][metric]) for r in records if metric in r["metrics"]]
            values[task] = _mean_std(seen) if seen else None
        deltas = deltas_of(records)
        mean, std = _mean_std(deltas) if len(deltas) == len(records) else (None, None)
        rows.append(
            {
                "group": group,
                "name": group,
                "kind": first.get("kind"),
                "description": first.get("description", ""),
                "tasks": tuple(first["tasks"]),
                "seeds": [r["seed"] for r in records],
                "values": values,
                "params": first.get("params"),
                "flops": first.get("flops"),
                "deltas": deltas,
                "delta": mean,
                "delta_std": std,
                "wall_s": sum(float(r.get("wall_s") or 0.0) for r in records),
            }
        )
    ref = next((row for row in rows if row["group"] == reference), None)
    for row in rows:
        row["test"], row["mark"] = None, ""
        if row is ref:
            row["mark"] = "ref"
        elif ref is not None and row["kind"] != "single_task" and row["delta"] is not None:
            row["test"] = welch_test(row["deltas"], ref["deltas"])
            if row["test"] is not None and row["test"][2] < alpha:
                row["mark"] = "▲" if row["delta"] > ref["delta"] else "▼"
    trivial = {}
    for run in runs:
        for key, value in run.trivial.items():
            trivial.setdefault(key, []).append(value)
    if trivial:
        metrics = {k: statistics.fmean(v) for k, v in trivial.items()}
        tasks = tuple(t for t in primary if primary[t][0] in metrics)
        directions = {primary[t][0]: primary[t][1] for t in tasks}
        delta = (
            delta_mtl(metrics, baselines, directions)
            if tasks and all(m in baselines for m in directions)
            else None
        )
        rows.append(
            {
                "group": "trivial (constant)",
                "name": "trivial (constant)",
                "kind": "trivial",
                "description": "constant predictors fitted on the training labels",
                "tasks": tasks,
                "seeds": [],
                "values": {t: (metrics[primary[t][0]], None) for t in tasks},
                "params": None,
                "flops": None,
                "deltas": [],
                "delta": delta,
                "delta_std": None,
                "test": None,
                "mark": "",
                "wall_s": 0.0,
            }
        )
    return rows, primary


# ---------------------------------------------------------------------------------------------
# table and figures


def _format_mean_std(key: str, value: tuple[float, float] | None) -> str:
    if value is None:
        return "—"
    mean, std = value
    if std is None:
        return _format_value(key, mean)
    return f"{_format_value(key, mean)} ± {_format_value(key, std)}"


def markdown_table(rows: Sequence[dict], primary: Mapping[str, tuple[str, bool]]) -> str:
    """Run, seeds, each task's metric (mean ± std), params, FLOPs, Δ_MTL (mean ± std), Welch's p
    against the reference and the mark."""
    header = ["run", "seeds"]
    for task, (metric_id, higher) in primary.items():
        key = metric_id[len(task) + 1 :]
        header.append(
            f"{task} {key}{' (%)' if key in PERCENT_KEYS else ''} {'↑' if higher else '↓'}"
        )
    header += ["params (M)", "FLOPs (G)", "Δ_MTL (%) ↑", "p", "vs ref"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["group"], str(len(row["seeds"])) if row["seeds"] else "—"]
        for task, (metric_id, _) in primary.items():
            key = metric_id[len(task) + 1 :]
            cells.append(
                _format_mean_std(key, row["values"].get(task)) if task in row["tasks"] else ""
            )
        cells += [_format_count(row["params"], 1e6), _format_count(row["flops"], 1e9)]
        if row["delta"] is None:
            cells.append("—")
        elif row["delta_std"] is None:
            cells.append(f"{row['delta']:+.2f}")
        else:
            cells.append(f"{row['delta']:+.2f} ± {row['delta_std']:.2f}")
        p = row["test"][2] if row["test"] else None
        cells.append("" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}"))
        cells.append(row["mark"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the page


def _wrap(line: str) -> str:
    if line.startswith(("|", "!", "<!--", "- ")) or len(line) <= 100:
        return line
    return textwrap.fill(line, 100, break_long_words=False, break_on_hyphens=False)


def _link(path: str, page: str) -> str:
    return os.path.relpath(path, os.path.dirname(os.path.abspath(page))).replace(os.sep, "/")


def page(
    content: Mapping,
    rows: Sequence[dict],
    primary: Mapping[str, tuple[str, bool]],
    page_path: str,
    figures: Mapping[str, str],
) -> str:
    """The generated part of the page (between `BEGIN` and `END`) from `summarize`'s rows."""
    study = content.get("study", {})
    machine, settings = study.get("machine", {}), study.get("settings", {})
    reference, alpha = study.get("reference", "hard_sharing"), float(study.get("alpha", 0.05))
    tested = [r for r in rows if r["test"] is not None]
    marked = [r for r in tested if r["mark"] in ("▲", "▼")]
    total_s = sum(r["wall_s"] for r in rows)
    lines = [
        BEGIN,
        "",
        f"Measured {study.get('date', '?')} with `{study.get('command', '?')}` "
        f"({machine.get('cpus', '?')} CPU cores, {machine.get('processor', '?')}; TensorFlow "
        f"{machine.get('tf', '?')}, Keras {machine.get('keras', '?')}).",
        "",
        "**Setup.** " + str(settings.get("description", "")),
        "",
        f"**Statistics.** Every metric is the mean ± sample standard deviation over the seeds "
        f"({', '.join(str(s) for s in study.get('seeds', []))}). Δ_MTL (survey Eq. 10) of each "
        "seed is taken against the single-task baselines averaged over their seeds. *p* is "
        f"Welch's two-sided t-test of a run's per-seed Δ_MTL against {reference}'s (equal loss "
        f"weights); ▲/▼ mark p < {alpha:g} (better/worse). No correction for multiple "
        f"comparisons: of the {len(tested)} runs tested, about {alpha * len(tested):.1f} would "
        f"be marked by chance alone; {len(marked)} are marked.",
        "",
        markdown_table(rows, primary),
        "",
    ]
    if "delta" in figures:
        lines += [
            f"![Δ_MTL of every run, ±1 std over seeds]({_link(figures['delta'], page_path)})",
            "",
        ]
    if "pareto" in figures:
        lines += [
            f"![Δ_MTL against FLOPs, Pareto front]({_link(figures['pareto'], page_path)})",
            "",
        ]
        front = pareto_front([r for r in rows if r["kind"] != "single_task"])
        lines += [
            "Pareto front (no run has fewer FLOPs and a higher mean Δ_MTL): "
            + ", ".join(
                f"{r['group']} ({r['flops'] / 1e9:.3g} GFLOPs, {r['delta']:+.2f})" for r in front
            )
            + ".",
            "",
        ]
    lines += ["| run | what | seeds | wall time, all seeds (s) |", "|---|---|---|---|"]
    for row in rows:
        if row["kind"] != "trivial":
            lines.append(
                f"| {row['group']} | {row['description']} | {len(row['seeds'])} | "
                f"{row['wall_s']:.0f} |"
            )
    lines += [
        "",
        f"**Time.** {len(content['records'])} runs, {total_s / 3600:.2f} h of training and "
        "evaluation (sum of the runs' wall times"
        + (f"; {study['time_note']}" if study.get("time_note") else "")
        + ").",
        "",
        "**What this shows, and what it does not.** " + str(study.get("scope", "")),
        "",
        END,
    ]
    return "\n".join(_wrap(line) for line in lines)


def write_page(path: str, generated: str, intro: str) -> None:
    """Write ``generated`` between the markers of ``path``, keeping hand-written text around it
    (``intro`` above it when the page is new)."""
    head, tail = intro, "\n"
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if BEGIN in old and END in old:
            head, tail = old[: old.index(BEGIN)], old[old.index(END) + len(END) :]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".page-", suffix=".md")
    with os.fdopen(fd, "w") as f:
        f.write(head + generated + tail)
    os.replace(tmp, path)


def figure_paths(page_path: str) -> dict[str, str]:
    """The figures of ``page_path`` (``docs/x.md``): ``docs/x/delta_mtl.png``, ``pareto.png``."""
    folder = os.path.splitext(page_path)[0]
    return {
        "delta": os.path.join(folder, "delta_mtl.png"),
        "pareto": os.path.join(folder, "pareto.png"),
    }


def rebuild(results_path: str, page_path: str, intro: str = "") -> str:
    """Rebuild the page at ``page_path`` and its figures from the results file alone; returns
    the table."""
    content = load_results(results_path)
    if not content["records"]:
        raise ValueError(f"{results_path} holds no finished run; run the study first")
    rows, primary = summarize(content)
    figures = figure_paths(page_path)
    delta_chart([r for r in rows if r["kind"] != "trivial"], figures["delta"])
    pareto_chart(rows, figures["pareto"])
    write_page(page_path, page(content, rows, primary, page_path, figures), intro)
    return markdown_table(rows, primary)


# ---------------------------------------------------------------------------------------------
# ``mtl-keras compare RESULTS.json --page PAGE.md``


def add_arguments(parser):
    """``mtl-keras compare``'s arguments (`mtl_keras.evaluation.compare.add_arguments`) and
    ``--page``, for a study results file."""
    from mtl_keras.evaluation import compare

    compare.add_arguments(parser)
    parser.add_argument(
        "--page",
        help="with one study results file (as benchmarks/synthetic_comparison.py writes): the "
        "Markdown page to rebuild, its figures in the folder of its name",
    )
    return parser


def run(args) -> int:
    """``mtl-keras compare``: a study results file's page (``--page``) and table, else the
    comparison of run folders (`mtl_keras.evaluation.compare.run`)."""
    from mtl_keras.evaluation import compare

    study_files = [p for p in args.runs if is_results_file(p)]
    if not study_files:
        if getattr(args, "page", None):
            raise ValueError(
                "--page needs a study results file (a JSON with 'study' and "
                "'records'), as benchmarks/synthetic_comparison.py writes"
            )
        return compare.run(args)
    if len(args.runs) != 1:
        raise ValueError(f"{study_files[0]} is a study results file; pass it alone")
    if args.page:
        table = rebuild(args.runs[0], args.page)
    else:
        table = markdown_table(*summarize(load_results(args.runs[0])))
    print(table)
    return 0
