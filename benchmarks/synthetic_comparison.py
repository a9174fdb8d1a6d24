"""The survey's comparison (Vandenhende et al., TPAMI 2022, Tables 3-8) on synthetic scenes, on CPU.

Usage::

    python benchmarks/synthetic_comparison.py [--quick] [--tasks semseg,depth,normals,edges]
        [--runs NAME,...] [--out-dir runs/comparison] [--docs docs] [--epochs N]
        [--train-examples N]

Trains, one after the other in this process, every run into its own folder ``OUT_DIR/<name>``:

* a single-task network per task (``architecture="single_task"``): the baselines of Δ_MTL;
* hard sharing with equal loss weights (``hard_sharing``);
* hard sharing with loss balancers (uncertainty weighting, DWA) and gradient balancers (MGDA-UB,
  i.e. MGDA on the shared representation, and PCGrad on the shared variables);
* encoder-focused (MTAN, cross-stitch) and decoder-focused (PAD-Net) architectures;
* the transformer-era decoders (multi-task DPT, InvPT, MLoRE) on the same encoder.

Every run starts from the demo recipe (``recipes/demo.py``: ResNet-18 family backbone of width 16
at output stride 16, HRNet-style heads, Adam with lr 2e-3 and weight decay 1e-4, poly schedule,
batch 8) on the same synthetic scenes, so params, FLOPs and metrics are comparable; PAD-Net's own
decoder is narrowed to 32 channels, DPT's, InvPT's and MLoRE's to about PAD-Net's parameter
count. A run whose folder already holds ``results.json`` (from the same settings) is skipped, so
an interrupted comparison resumes where it stopped; settings that differ from a finished run's
are refused.

Then ``mtl_keras.evaluation.compare`` writes the table (each task's metric, params, FLOPs, Δ_MTL
against the single-task runs, and the trivial constant predictors as a floor), a Δ_MTL bar chart
and one prediction grid per task, and the page ``DOCS/synthetic_comparison.md`` with the command,
the date, the wall time of every run and how much of the machine this process got. The generated
part of the page sits between two HTML comments; text outside them is kept when the page is
written again. ``OUT_DIR/.comparison.json`` keeps the timings and the table (a hidden file, so
``mtl-keras compare OUT_DIR/*`` sees only run folders).

``--quick`` is a smoke version (32x32 images, 16 training examples, 1 epoch, width 8) that writes
into ``runs/comparison_quick`` and ``runs/comparison_quick/docs`` unless told otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import sys
import textwrap
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # ``recipes`` lives at the repository root
    sys.path.insert(0, ROOT)

TASKS = ("semseg", "depth", "normals", "edges")

#: Multi-task runs: name -> recipe fields replaced in the demo recipe.
MULTI_TASK_RUNS: dict[str, dict] = {
    "hard_sharing": {},
    "hs_uncertainty": {"balancer": "uncertainty"},
    "hs_dwa": {"balancer": "dwa"},
    "hs_mgda_ub": {"balancer": "mgda", "gradient_source": "representation"},
    "hs_pcgrad": {"balancer": "pcgrad"},
    "mtan": {"architecture": "mtan"},
    "cross_stitch": {"architecture": "cross_stitch"},
    "padnet": {"architecture": "padnet", "head_kwargs": {"channels": 32}},
    # transformer-era decoders on the same encoder, narrowed to about PAD-Net's parameter count;
    # InvPT's three stages read P2-P4 (strides 4, 8, 16: P5 is at stride 16 too here), MLoRE works
    # on P3's grid (8x8; the paper's stride 16 would be 4x4 at 64 px)
    "dpt": {"architecture": "dpt", "head_kwargs": {"features": 20}},
    "invpt": {
        "architecture": "invpt",
        "head_kwargs": {"embed_dim": 32, "prediction_channels": 16, "levels": ["P2", "P3", "P4"]},
    },
    "mlore": {"architecture": "mlore", "head_kwargs": {"channels": 24, "grid_level": "P3"}},
}

#: What each run is, for the page.
DESCRIPTIONS = {
    "single_*": "one network per task (the Δ_MTL baselines)",
    "hard_sharing": "hard parameter sharing, equal loss weights",
    "hs_uncertainty": "hard sharing, uncertainty weighting (Kendall et al., 2018)",
    "hs_dwa": "hard sharing, dynamic weight averaging (Liu et al., 2019)",
    "hs_mgda_ub": "hard sharing, MGDA on the shared representation (MGDA-UB, Sener & Koltun)",
    "hs_pcgrad": "hard sharing, PCGrad on the shared variables (Yu et al., 2020)",
    "mtan": "MTAN: task attention modules on the shared backbone (Liu et al., 2019)",
    "cross_stitch": "cross-stitch network: one backbone per task, mixed per stage (Misra et al.)",
    "padnet": "PAD-Net: initial predictions distilled into each other (Xu et al., 2018)",
    "dpt": "multi-task DPT: reassemble and fusion decoder per task (Ranftl et al., 2021)",
    "invpt": "InvPT: multi-task attention in an inverted pyramid (Ye & Xu, 2022)",
    "mlore": "MLoRE: shared low-rank experts, generic path, task routers (Yang et al., 2024)",
}

#: Data, size and length of the full and the quick comparison.
FULL = {  # the demo recipe's
    "image_size": (64, 64),
    "train_examples": 1024,
    "val_examples": 128,
    "epochs": 8,
    "backbone_kwargs": {"width": 16, "output_stride": 16},
}
QUICK = {
    "image_size": (32, 32),
    "train_examples": 16,
    "val_examples": 8,
    "epochs": 1,
    "backbone_kwargs": {"width": 8, "output_stride": 16},
    "image_summaries": 1,
}

BEGIN = "<!-- synthetic_comparison: generated from here -->"
END = "<!-- synthetic_comparison: generated up to here -->"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke version: tiny sizes, 1 epoch")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument(
        "--runs",
        default=",".join(MULTI_TASK_RUNS),
        help=f"comma-separated multi-task runs, of {', '.join(MULTI_TASK_RUNS)} "
        "(the single-task runs of the tasks always run)",
    )
    p.add_argument("--out-dir", help="run folders (default runs/comparison[_quick])")
    p.add_argument("--docs", help="folder of the page and its figures (default docs; quick: "
                   "OUT_DIR/docs)")  # fmt: skip
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--train-examples", type=int, help="override the training examples")
    p.add_argument("--examples", type=int, help="validation images per prediction grid")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    args.tasks = tuple(t for t in args.tasks.split(",") if t)
    args.runs = tuple(r for r in args.runs.split(",") if r)
    unknown = [r for r in args.runs if r not in MULTI_TASK_RUNS]
    if unknown:
        p.error(f"unknown run(s) {unknown}; valid: {', '.join(MULTI_TASK_RUNS)}")
    if len(args.tasks) < 2 and args.runs:
        p.error("multi-task runs need at least two tasks")
    args.out_dir = args.out_dir or ("runs/comparison_quick" if args.quick else "runs/comparison")
    args.docs = args.docs or (os.path.join(args.out_dir, "docs") if args.quick else "docs")
    args.examples = args.examples or (2 if args.quick else 3)
    return args


def settings(args) -> dict:
    size = dict(QUICK if args.quick else FULL)
    if args.epochs:
        size["epochs"] = args.epochs
    if args.train_examples:
        size["train_examples"] = args.train_examples
    return size


def plan(args):
    """``[(name, Recipe)]``: the single-task runs, then the multi-task runs."""
    from mtl_keras import recipes

    base = dataclasses.replace(
        recipes.get("demo"), tasks=args.tasks, run_dir=args.out_dir, **settings(args)
    )
    runs = [
        (
            f"single_{t}",
            dataclasses.replace(base, name=f"single_{t}", tasks=(t,), architecture="single_task"),
        )
        for t in args.tasks
    ]
    for name in args.runs:
        runs.append((name, dataclasses.replace(base, name=name, **MULTI_TASK_RUNS[name])))
    return runs


def finished(recipe) -> bool:
    """Whether ``recipe``'s run is done; refuses a finished run trained with other settings."""
    from mtl_keras.training import resume

    folder = recipe.output_dir
    if not os.path.exists(os.path.join(folder, "results.json")):
        return False
    differ = resume.recorded_differences(folder, recipe)
    if differ != []:
        settings = f"other {differ}" if differ else "unrecorded settings (no recipe.json)"
        raise ValueError(
            f"{folder} finished with {settings}, not those asked now; remove it (or pass another "
            "--out-dir) to train it again"
        )
    return True


class LoadSampler:
    """Samples the 1-minute load average every ``period`` seconds in a daemon thread."""

    def __init__(self, period: float = 15.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)

    def _loop(self, period):
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_all(runs) -> dict[str, dict]:
    """Train every unfinished run; returns ``{name: timing}`` (read back for finished runs)."""
    import keras

    from mtl_keras.training import run

    timings = {}
    for name, recipe in runs:
        timing_file = os.path.join(recipe.output_dir, "timing.json")
        if finished(recipe):
            print(f"[comparison] {name}: finished before, skipped", flush=True)
            if os.path.exists(timing_file):
                with open(timing_file) as f:
                    timings[name] = {**json.load(f), "skipped": True}
            continue
        print(f"[comparison] {name}: training ({recipe.architecture}, {recipe.balancer})",
              flush=True)  # fmt: skip
        wall, cpu, load = time.time(), _cpu_seconds(), os.getloadavg()[0]
        summary = run.train(recipe, verbose=2, export=False)
        timing = {
            "wall_s": round(time.time() - wall, 1),
            "cpu_s": round(_cpu_seconds() - cpu, 1),
            "load_start": load,
            "load_end": os.getloadavg()[0],
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        with open(timing_file, "w") as f:
            json.dump(timing, f, indent=2)
        timings[name] = timing
        print(summary["table"], flush=True)
        print(f"[comparison] {name}: {timing['wall_s']:.0f} s", flush=True)
        del summary
        keras.backend.clear_session()
        gc.collect()
    return timings


def _figure_link(path: str, docs: str) -> str:
    return os.path.relpath(path, docs).replace(os.sep, "/")


def page(args, runs, table, chart, grids, timings, machine) -> str:
    """The generated part of the page."""
    size = settings(args)
    h, w = size["image_size"]
    recipe = runs[0][1]
    command = shlex.join(["python", "benchmarks/synthetic_comparison.py", *args.argv])
    names = [name for name, _ in runs]
    lines = [
        BEGIN,
        "",
        f"Measured {machine['date']} with `{command}` "
        f"({machine['cpus']} CPU cores, {machine['processor']}; TensorFlow {machine['tf']}, "
        f"Keras {machine['keras']}).",
        "",
        "**Setup.** "
        f"Tasks {', '.join(args.tasks)}; {size['train_examples']} training and "
        f"{size['val_examples']} validation scenes at {h}x{w}; {size['epochs']} "
        f"epoch{'s' * (size['epochs'] != 1)} of batch {recipe.batch_size} (Adam, lr "
        f"{recipe.learning_rate:g}, weight decay "
        f"{recipe.weight_decay:g}, poly schedule), seed {recipe.seed}. Backbone "
        f"{recipe.backbone} ({json.dumps(size['backbone_kwargs'])}), {recipe.head} heads. "
        "Metrics on the validation scenes; Δ_MTL against the single-task rows; the last row is "
        "the trivial constant predictor (majority class, mean depth, mean normal, constant edge "
        "probability) fitted on training labels.",
        "",
        table,
        "",
        "The same table, chart and grids from the run folders alone: `mtl-keras compare "
        + " ".join(f"{args.out_dir}/{name}" for name in names)
        + " --trivial --out DIR`.",
        "",
        f"![Δ_MTL of every multi-task run]({_figure_link(chart, args.docs)})",
        "",
        "Predictions on validation scenes (columns: image, label, then every run with the task):",
        "",
    ]
    for task, path in grids.items():
        lines += [f"**{task}**", "", f"![{task} predictions]({_figure_link(path, args.docs)})", ""]
    lines += ["| run | what | wall time (s) | CPU time (s) |", "|---|---|---|---|"]
    for name in names:
        t = timings.get(name, {})
        what = DESCRIPTIONS.get(name) or DESCRIPTIONS["single_*"]
        wall = f"{t['wall_s']:.0f}" if "wall_s" in t else "—"
        cpu = f"{t['cpu_s']:.0f}" if "cpu_s" in t else "—"
        lines.append(f"| {name} | {what} | {wall} | {cpu} |")
    total = sum(t.get("wall_s", 0.0) for t in timings.values())
    skipped = [n for n, t in timings.items() if t.get("skipped")]
    lines += [
        "",
        f"**Time.** Training all {len(names)} runs took {total / 60:.1f} min of wall time "
        f"(sum over runs); this invocation ran {machine['wall_s'] / 60:.1f} min in all "
        "(training, evaluation, table and figures)"
        + (f", reusing the finished runs {', '.join(skipped)}" if skipped else "")
        + ". "
        f"The machine was shared: the 1-minute load average was {machine['load_mean']:.1f} on "
        f"average (max {machine['load_max']:.1f}) on {machine['cpus']} cores, and this process "
        f"got {machine['cpu_s'] / 60:.1f} CPU-minutes in {machine['wall_s'] / 60:.1f} minutes "
        f"({machine['share']:.0%} of the machine).",
        "",
        END,
    ]
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str) -> str:
    """Prose lines wrapped at 100 characters like the other pages; tables and images as they are."""
    if line.startswith(("|", "!", "<!--")) or len(line) <= 100:
        return line
    return textwrap.fill(line, 100, break_long_words=False, break_on_hyphens=False)


INTRO = """# The survey's comparison on synthetic scenes

Vandenhende et al. (TPAMI 2022) compare single-task networks, hard sharing with loss and gradient
balancers, and encoder- and decoder-focused architectures on NYUD-v2 and PASCAL-Context (Tables
3-8). `benchmarks/synthetic_comparison.py` runs the same comparison on the synthetic scenes at a
small size, on CPU in under an hour, with the same backbone, heads and optimiser for every run:
one command trains every run (resumable), then `mtl-keras compare` builds the table, the Δ_MTL
chart and the prediction grids. The section below is written by the script; run it again to
reproduce it (numbers move by a few points between machines and runs: one seed, short training).

"""


def write_page(path: str, generated: str) -> None:
    """Write ``generated`` between the markers of ``path``, keeping hand-written text around it."""
    head, tail = INTRO, "\n"
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if BEGIN in old and END in old:
            head = old[: old.index(BEGIN)]
            tail = old[old.index(END) + len(END) :]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(head + generated + tail)


def main(argv=None) -> int:
    args = parse_args(argv)
    start, cpu_start = time.time(), _cpu_seconds()
    with LoadSampler() as load:
        runs = plan(args)
        timings = train_all(runs)
        import keras
        import tensorflow as tf

        from mtl_keras.evaluation import compare

        folders = [recipe.output_dir for _, recipe in runs]
        figures = os.path.join(args.docs, "synthetic_comparison")
        chart = os.path.join(figures, "delta_mtl.png")
        table = compare.compare(folders, chart=chart, trivial=True)
        grids = compare.prediction_grids(folders, figures, examples=args.examples)
    wall, cpu = time.time() - start, _cpu_seconds() - cpu_start
    cpus = os.cpu_count() or 1
    samples = load.samples or [os.getloadavg()[0]]
    machine = {
        "date": datetime.date.today().isoformat(),
        "cpus": cpus,
        "processor": _processor(),
        "tf": tf.__version__,
        "keras": keras.__version__,
        "wall_s": wall,
        "cpu_s": cpu,
        "share": cpu / (wall * cpus),
        "load_mean": sum(samples) / len(samples),
        "load_max": max(samples),
    }
    generated = page(args, runs, table, chart, grids, timings, machine)
    doc = os.path.join(args.docs, "synthetic_comparison.md")
    write_page(doc, generated)
    with open(os.path.join(args.out_dir, ".comparison.json"), "w") as f:
        json.dump({"timings": timings, "machine": machine, "table": table}, f, indent=2)
    print(table)
    print(f"[comparison] wrote {doc} in {wall / 60:.1f} min ({machine['share']:.0%} of the "
          f"machine, load {machine['load_mean']:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
