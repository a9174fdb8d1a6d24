"""Compare runs in one table like the survey's: each task's metric, params, FLOPs and Δ_MTL.

A run is a folder written by ``mtl-keras train`` / ``evaluate`` (or a result JSON file). Its
metrics are read from the result files of `mtl_keras.metrics.write_results`
(``{"task": name, "metrics": {metric_id: value}, ...}``), merged in the order
``results.json`` (training), ``eval.json`` (``mtl-keras evaluate``), ``protocol.json``
(`mtl_keras.evaluation.protocol`), later files overriding earlier ones. Its tasks come from
``recipe.json`` when present, else from the metric ids. Params and FLOPs are read from a
``params`` / ``flops`` field (top level or under ``complexity``) of any of these files.

Each task is shown by its primary metric (the TaskSpec's, or the survey protocol's when a run has
it, e.g. ``edges_ods_f`` over the training proxy ``edges_f``). Δ_MTL (Vandenhende et al.,
"Multi-Task Learning for Dense Prediction Tasks: A Survey", TPAMI 2022, Eq. 10) compares every
run with the single-task baselines: the single-task runs among the compared ones, or the result
files given as ``baselines``. ``trivial=True`` adds a row for the constant predictors that
``mtl-keras train`` scores next to every run (majority class, mean depth...), as a floor.

`prediction_grids` draws, per task, the predictions of every run on the same validation images
side by side (runs need ``recipe.json`` and ``checkpoints/last.weights.h5``, as ``mtl-keras
train`` writes them); ``mtl-keras compare --out DIR`` writes them next to the table and chart.

Example:
    >>> print(compare(["runs/st_semseg", "runs/st_depth", "runs/mtl"]))  # doctest: +SKIP
    | run | tasks | semseg miou (%) ↑ | depth rmse ↓ | params (M) | FLOPs (G) | Δ_MTL (%) ↑ |
    ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mtl_keras.evaluation.protocol import PROTOCOLS, get_protocol

RESULT_FILES = ("results.json", "eval.json", "protocol.json")
#: Metric keys shown as percentages (fractions in [0, 1]).
PERCENT_KEYS = ("miou", "pixel_acc", "max_f", "f", "precision", "recall", "ods_f", "ois_f", "ap")


@dataclasses.dataclass
class RunResult:
    """What one run reports."""

    name: str
    path: str
    tasks: tuple[str, ...]
    metrics: dict[str, float]
    params: int | None = None
    flops: int | None = None
    trivial: dict[str, float] = dataclasses.field(default_factory=dict)
    protocol: str | None = None


def _load_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a result file.") from err
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds {type(content).__name__}; expected a JSON object.")
    return content


def _complexity(content: Mapping, key: str):
    value = content.get(key, (content.get("complexity") or {}).get(key))
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _tasks_from_metrics(metrics: Mapping[str, float]) -> tuple[str, ...]:
    from mtl_keras.tasks import available

    found = []
    for task in available():
        if any(k.startswith(f"{task}_") for k in metrics) and task not in found:
            found.append(task)
    return tuple(found)


def read_run(path: str | os.PathLike) -> RunResult:
    """Read a run folder (or a single result JSON file) into a `RunResult`.

    Raises:
        FileNotFoundError: the path does not exist or the folder has no result file.
        ValueError: a result file is not JSON or has no ``metrics`` mapping.
    """
    path = Path(path)
    if path.is_file():
        files, folder = [path], path.parent
    elif path.is_dir():
        files, folder = [path / f for f in RESULT_FILES if (path / f).is_file()], path
        if not files:
            raise FileNotFoundError(
                f"{path} holds none of {', '.join(RESULT_FILES)}; pass run folders written by "
                "mtl-keras train/evaluate, or result JSON files."
            )
    else:
        raise FileNotFoundError(f"{path} does not exist; pass run folders or result JSON files.")
    metrics: dict[str, float] = {}
    trivial: dict[str, float] = {}
    params = flops = protocol = None
    name = path.stem if path.is_file() else path.name
    for file in files:
        content = _load_json(file)
        if not isinstance(content.get("metrics"), dict):
            raise ValueError(
                f'{file} has no \'metrics\' mapping; expected {{"task": ..., "metrics": '
                "{...}} as written by mtl_keras.metrics.write_results."
            )
        metrics.update({k: float(v) for k, v in content["metrics"].items()})
        if isinstance(content.get("trivial_baseline"), dict):
            trivial.update({k: float(v) for k, v in content["trivial_baseline"].items()})
        params = _complexity(content, "params") or params
        flops = _complexity(content, "flops") or flops
        name = str(content.get("task") or name)
        if isinstance(content.get("protocol"), dict) and content["protocol"].get("name"):
            protocol = str(content["protocol"]["name"])
    recipe_file = folder / "recipe.json"
    tasks = ()
    if path.is_dir() and recipe_file.is_file():
        recipe = _load_json(recipe_file)
        tasks = tuple(recipe.get("tasks") or ())
        name = str(recipe.get("name") or name)
    tasks = tasks or _tasks_from_metrics(metrics)
    return RunResult(name, str(path), tasks, metrics, params, flops, trivial, protocol)


def trivial_run(runs: Sequence[RunResult], name: str = "trivial (constant)") -> RunResult | None:
    """A pseudo-run of the trivial baselines the runs recorded (``trivial_baseline`` of
    ``results.json``), over every task of ``runs``; None when no run recorded one."""
    metrics: dict[str, float] = {}
    for run in runs:
        for key, value in run.trivial.items():
            metrics.setdefault(key, value)
    if not metrics:
        return None
    tasks = tuple(
        t for t in dict.fromkeys(t for run in runs for t in run.tasks)
        if any(k.startswith(f"{t}_") for k in metrics)
    )  # fmt: skip
    return RunResult(name, "", tasks, metrics)


def primary_metrics(
    runs: Sequence[RunResult], overrides: Mapping[str, str] | None = None
) -> dict[str, tuple[str, bool]]:
    """``{task: (metric_id, higher_is_better)}`` for every task of ``runs``.

    Args:
        runs: the runs to compare.
        overrides: ``{task: metric_key}`` to show another metric, e.g. ``{"depth": "abs_rel"}``.
    """
    from mtl_keras.tasks import get

    overrides = dict(overrides or {})
    chosen = {}
    for task in dict.fromkeys(t for run in runs for t in run.tasks):
        spec = get(task)
        directions = dict(spec.higher_is_better)
        key = spec.primary_metric
        for name in dict.fromkeys([*(run.protocol for run in runs if run.protocol), *PROTOCOLS]):
            # the primary metric under the runs' protocol, where the runs report it
            candidate, _ = spec.evaluation_primary(get_protocol(name))
            if any(spec.metric_id(candidate) in run.metrics for run in runs):
                key = candidate
                break
        key = overrides.get(task, key)
        if key not in directions:
            raise ValueError(f"task {task!r} has no metric {key!r}; valid: {', '.join(directions)}")
        chosen[task] = (spec.metric_id(key), directions[key])
    return chosen


def _baselines_from_runs(runs: Sequence[RunResult]) -> dict[str, float]:
    single: dict[str, RunResult] = {}
    for run in runs:
        if len(run.tasks) != 1:
            continue
        task = run.tasks[0]
        if task in single:
            raise ValueError(
                f"two single-task runs of {task!r} ({single[task].path}, {run.path}); keep one or "
                "pass the baselines explicitly (baselines=... / --baselines)."
            )
        single[task] = run
    return {k: v for run in single.values() for k, v in run.metrics.items()}


def comparison_rows(
    runs: Sequence[RunResult],
    baselines: str | os.PathLike | Sequence | Mapping[str, float] | None = None,
    primary: Mapping[str, tuple[str, bool]] | None = None,
) -> list[dict]:
    """One dict per run: ``name``, ``tasks``, ``values`` ``{task: value}``, ``params``,
    ``flops``, ``delta`` (Δ_MTL in %, None without baselines for every task) and ``missing``."""
    from mtl_keras.metrics import delta_mtl, load_baselines

    primary = primary or primary_metrics(runs)
    if baselines is None:
        base = _baselines_from_runs(runs)
    elif isinstance(baselines, Mapping):
        base = {k: float(v) for k, v in baselines.items()}
    else:
        base = load_baselines(baselines)
    rows = []
    for run in runs:
        values = {t: run.metrics.get(primary[t][0]) for t in run.tasks}
        directions = {primary[t][0]: primary[t][1] for t in run.tasks}
        missing = [m for m in directions if m not in base or m not in run.metrics]
        delta = None
        if directions and not missing:
            delta = delta_mtl(run.metrics, base, directions)
        rows.append({
            "name": run.name, "tasks": run.tasks, "values": values, "params": run.params,
            "flops": run.flops, "delta": delta, "missing": missing,
        })  # fmt: skip
    return rows


def _format_value(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    if key in PERCENT_KEYS:
        return f"{100 * value:.2f}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _format_count(value: int | None, unit: float) -> str:
    """``value / unit`` with two decimals, three below 1 (small models' GFLOPs); — when unknown."""
    if not value:
        return "—"
    return f"{value / unit:.2f}" if value >= unit else f"{value / unit:.3f}"


def markdown_table(rows: Sequence[dict], primary: Mapping[str, tuple[str, bool]]) -> str:
    """A Markdown table: run, tasks, one column per task metric, params, FLOPs, Δ_MTL."""
    header = ["run", "tasks"]
    for task, (metric_id, higher) in primary.items():
        key = metric_id[len(task) + 1 :]
        unit = " (%)" if key in PERCENT_KEYS else ""
        header.append(f"{task} {key}{unit} {'↑' if higher else '↓'}")
    header += ["params (M)", "FLOPs (G)", "Δ_MTL (%) ↑"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["name"], ", ".join(row["tasks"])]
        for task, (metric_id, _) in primary.items():
            key = metric_id[len(task) + 1 :]
            cells.append(
                _format_value(key, row["values"].get(task)) if task in row["tasks"] else ""
            )
        cells.append(_format_count(row["params"], 1e6))
        cells.append(_format_count(row["flops"], 1e9))
        cells.append(f"{row['delta']:+.2f}" if row["delta"] is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"- {row['name']}: no Δ_MTL, missing baseline or metric {', '.join(row['missing'])}"
        for row in rows
        if row["delta"] is None and row["missing"]
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def delta_chart(
    rows: Sequence[dict],
    path: str | os.PathLike,
    *,
    width: int = 640,
    single_task: bool = False,
) -> str:
    """Write a horizontal bar chart of Δ_MTL (one bar per run that has one) as a PNG (PIL).

    Bars grow right (green) for positive and left (red) for negative values from a zero line;
    the axis spans the values and zero.
    Single-task rows (Δ_MTL 0 against themselves) are left out unless ``single_task`` is True or
    no other row has a Δ_MTL. A row with a ``delta_std`` gets a ± one-standard-deviation bar.
    """
    charted = [row for row in rows if row["delta"] is not None]
    multi = [row for row in charted if len(row["tasks"]) > 1]
    if multi and not single_task:
        charted = multi
    items = [(row["name"], row["delta"], row.get("delta_std") or 0.0) for row in charted]
    font = ImageFont.load_default()
    bar, gap, top, label_w = 18, 6, 28, 200
    value_w = 110 if any(error for *_, error in items) else 70
    height = top + max(1, len(items)) * (bar + gap) + gap
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), "Delta_MTL (%) against the single-task baselines", fill="black", font=font)
    plot_left, plot_right = label_w, width - value_w
    # the axis spans [min(0, values), max(0, values)]: all-negative bars use the whole width
    low = min([v - e for _, v, e in items] + [0.0])
    high = max([v + e for _, v, e in items] + [0.0])
    scale = (plot_right - plot_left - 4) / max(high - low, 1e-9)
    zero = plot_left + 2 + (0.0 - low) * scale
    draw.line([(zero, top - 4), (zero, height - gap)], fill=(120, 120, 120), width=1)
    for i, (name, value, error) in enumerate(items):
        y = top + i * (bar + gap)
        end = zero + value * scale
        color = (46, 139, 87) if value >= 0 else (200, 60, 60)
        draw.rectangle([(min(zero, end), y), (max(zero, end), y + bar)], fill=color)
        if error > 0:  # ± one standard deviation
            lo, hi, mid = end - error * scale, end + error * scale, y + bar / 2
            draw.line([(lo, mid), (hi, mid)], fill="black", width=1)
            draw.line([(lo, y + 4), (lo, y + bar - 4)], fill="black", width=1)
            draw.line([(hi, y + 4), (hi, y + bar - 4)], fill="black", width=1)
        label = name
        while len(label) > 1 and draw.textlength(label, font=font) > label_w - 12:
            label = label[:-1]
        draw.text((6, y + 4), label, fill="black", font=font)
        text = f"{value:+.2f}" + (f" ±{error:.2f}" if error > 0 else "")
        draw.text((plot_right + 6, y + 4), text, fill="black", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format="PNG")
    return os.fspath(path)


def _trained_run(folder: Path):
    """``(recipe, weights path)`` of a run folder written by ``mtl-keras train``, else None."""
    from mtl_keras.training.recipe import Recipe

    weights = folder / "checkpoints" / "last.weights.h5"
    recipe_file = folder / "recipe.json"
    if not (folder.is_dir() and recipe_file.is_file() and weights.is_file()):
        return None
    stored = _load_json(recipe_file)
    fields = {f.name for f in dataclasses.fields(Recipe)}
    # the checkpoint holds every weight: the pretrained ones need not exist on this machine
    stored = {**stored, "backbone_weights": None}
    try:
        recipe = Recipe(**{k: v for k, v in stored.items() if k in fields})
    except (TypeError, ValueError):
        return None
    return recipe, weights


def _validation_examples(recipe, examples: int):
    """The first ``examples`` validation images and labels of ``recipe``'s data."""
    import numpy as np

    from mtl_keras.training import building

    small = dataclasses.replace(
        recipe, train_examples=recipe.batch_size, val_examples=max(examples, 1)
    )
    bundle = building.load_data(small)
    images, labels = [], {t: [] for t in recipe.tasks}
    for batch_images, batch_labels in bundle.val:
        images.append(np.asarray(batch_images))
        for t in recipe.tasks:
            labels[t].append(np.asarray(batch_labels[t]))
        if sum(len(i) for i in images) >= examples:
            break
    images = np.concatenate(images)[:examples]
    return images, {t: np.concatenate(v)[:examples] for t, v in labels.items()}, bundle


def prediction_grids(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    examples: int = 3,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write one PNG per task: rows are validation images; columns the image, the label and the
    prediction of every run that has the task, in ``run_dirs`` order.

    Every run is rebuilt from its ``recipe.json`` and loaded from its
    ``checkpoints/last.weights.h5``; folders without them (and result files) are skipped. All
    runs must see the same validation images (same dataset, image size and data seed).

    Args:
        run_dirs: run folders written by ``mtl-keras train``.
        out_dir: folder for ``predictions_{task}.png``.
        examples: validation images per grid.
        names: ``{run folder: column title}``; default: the run's recipe name.

    Returns:
        ``{task: path}`` of the grids written.

    Raises:
        ValueError: two runs were evaluated on different images.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from mtl_keras.data.preview import preview_grid
    from mtl_keras.training import building
    from mtl_keras.training.precision import precision_policy

    names = {os.fspath(k): v for k, v in (names or {}).items()}
    images = reference = None
    labels: dict[str, np.ndarray] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}
    colorize: dict[str, object] = {}
    for folder in map(Path, run_dirs):
        trained = _trained_run(folder)
        if trained is None:
            continue
        recipe, weights = trained
        run_images, run_labels, bundle = _validation_examples(recipe, examples)
        if images is None:
            images, reference = run_images, folder
        elif run_images.shape != images.shape or not np.array_equal(run_images, images):
            raise ValueError(
                f"{folder} was evaluated on other images than {reference} (dataset, image size "
                "or data_seed differ); prediction grids compare runs on the same images"
            )
        specs = building.task_specs(recipe, bundle.task_options)
        with precision_policy(recipe.precision):
            model = building.build_model(recipe, specs, steps=1)
            model.load_weights(weights)
            raw = model.network(tf.convert_to_tensor(images, tf.float32), training=False)
        title = names.get(os.fspath(folder), recipe.name)
        for task, spec in specs.items():
            pred = tf.image.resize(tf.cast(raw[task], tf.float32), images.shape[1:3], "bilinear")
            labels.setdefault(task, run_labels[task])
            columns.setdefault(task, {})[title] = np.asarray(spec.activate(pred))
            colorize.setdefault(task, spec.colorize)
        del model
        keras.backend.clear_session()
    written = {}
    for task, predictions in columns.items():
        grid = {"image": images, "label": labels[task], **predictions}
        path = os.path.join(os.fspath(out_dir), f"predictions_{task}.png")
        written[task] = preview_grid(
            grid, path, colorize={k: colorize[task] for k in grid if k != "image"}
        )
    return written


def compare(
    run_dirs: Sequence[str | os.PathLike],
    baselines: str | os.PathLike | Sequence | Mapping[str, float] | None = None,
    *,
    metrics: Mapping[str, str] | None = None,
    chart: str | os.PathLike | None = None,
    trivial: bool = False,
) -> str:
    """The Markdown comparison table of ``run_dirs`` (and optionally a Δ_MTL bar chart).

    Args:
        run_dirs: run folders or result JSON files, in table order.
        baselines: single-task result files or folder (`mtl_keras.metrics.load_baselines`), a
            ``{metric_id: value}`` mapping, or None to use the single-task runs of ``run_dirs``.
        metrics: ``{task: metric_key}`` to show a metric other than the primary one.
        chart: where to write the PNG bar chart of Δ_MTL (None: no chart).
        trivial: add a last row with the trivial baselines the runs recorded (not charted).

    Returns:
        The Markdown table (with notes on runs whose Δ_MTL is undefined).
    """
    if not run_dirs:
        raise ValueError("compare needs at least one run folder or result file")
    runs = [read_run(p) for p in run_dirs]
    primary = primary_metrics(runs, metrics)
    rows = comparison_rows(runs, baselines, primary)
    if chart is not None:
        delta_chart(rows, chart)
    floor = trivial_run(runs) if trivial else None
    if floor is not None:
        base = baselines if baselines is not None else _baselines_from_runs(runs)
        rows += comparison_rows([floor], base, primary)
    return markdown_table(rows, primary)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mtl-keras compare``."""
    parser.add_argument("runs", nargs="+", help="run folders or result JSON files")
    parser.add_argument(
        "--baselines",
        help="single-task result JSON files or folder (default: the single-task runs given)",
    )
    parser.add_argument(
        "--metric", action="append", default=[], metavar="TASK=KEY",
        help="show another metric of a task, e.g. depth=abs_rel",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        help="folder for comparison.md, delta_mtl.png and predictions_{task}.png (the grids of "
        "runs with recipe.json and checkpoints)",
    )
    parser.add_argument(
        "--trivial", action="store_true", help="add a row of the runs' trivial baselines"
    )
    parser.add_argument(
        "--examples", type=int, default=3, help="validation images per prediction grid (0: none)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``mtl-keras compare`` with parsed ``args``; prints the table, returns 0."""
    metrics = {}
    for item in args.metric:
        if "=" not in item:
            raise ValueError(f"--metric expects TASK=KEY, got {item!r}")
        task, key = item.split("=", 1)
        metrics[task] = key
    chart = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        chart = os.path.join(args.out, "delta_mtl.png")
    table = compare(args.runs, args.baselines, metrics=metrics, chart=chart, trivial=args.trivial)
    if args.out:
        with open(os.path.join(args.out, "comparison.md"), "w") as f:
            f.write(table + "\n")
        if args.examples > 0:
            prediction_grids(args.runs, args.out, examples=args.examples)
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m mtl_keras.evaluation.compare RUN ...``."""
    parser = add_arguments(argparse.ArgumentParser(prog="mtl-keras compare", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
