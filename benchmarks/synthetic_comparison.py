"""The survey's experimental study (Vandenhende et al., TPAMI 2022, Sec. 6, Tables 3-8) at full
breadth on synthetic scenes, with seeds, on CPU.

Usage::

    python benchmarks/synthetic_comparison.py [--quick] [--seeds 0,1,2] [--groups PATTERN,...]
        [--tasks semseg,depth,normals,edges] [--out-dir runs/study] [--results FILE]
        [--page FILE] [--epochs N] [--train-examples N] [--list]

The runs come from the registries; nothing is listed here by hand:

* ``single_<task>``: a single-task network per task, the baselines of Δ_MTL;
* ``<architecture>``: every registered architecture (``mtl_keras.architectures.available()``)
  with equal loss weights; ``hard_sharing`` is the reference every other run is tested against;
* ``hs_<balancer>``: every registered balancer (``mtl_keras.balancing.available()``, but
  ``fixed``, which is ``hard_sharing``) on hard sharing, at its paper's defaults;
* each of them once per seed (``<group>_s<seed>``).

Every run starts from the demo recipe (``recipes/demo.py``: ResNet-18 family backbone of width 16
at output stride 16, HRNet-style heads, Adam with lr 2e-3 and weight decay 1e-4, poly schedule,
batch 8) on the same synthetic scenes, so params, FLOPs and metrics are comparable. `SIZE`
narrows a few decoders to about PAD-Net's parameter count and `SETTINGS` holds the few choices a
method needs to be itself (MGDA on the representation is the survey's MGDA-UB; ASTMT trains with
its discriminator); an architecture or balancer registered later joins with the demo recipe's
settings and its own defaults.

After every run its record (metrics, params, FLOPs, trivial baselines, recipe fingerprint, wall
and CPU time) is written atomically into the results file (default
``docs/synthetic_comparison/results.json``, committed). A run whose record is there with the same
settings is not trained again, so the study resumes run by run and can be spread over several
sittings; a record of other settings is refused. A run interrupted in training resumes from its
run folder (``OUT_DIR/<run>``). Then `mtl_keras.evaluation.study` writes the page (default
``docs/synthetic_comparison.md``) with the mean ± std table, Welch's test against hard sharing,
the Δ_MTL chart with error bars and the Pareto plot of Δ_MTL against FLOPs. ``mtl-keras compare
RESULTS --page PAGE`` rebuilds the page from the results file alone.

``--quick`` is a smoke version (one seed, 32x32 images, 16 training examples, 1 epoch, width 8;
the single-task runs, hard sharing and one gradient-level balancer, PCGrad) that writes into
``runs/study_quick`` unless told otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import gc
import json
import os
import platform
import resource
import shlex
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # ``recipes`` lives at the repository root
    sys.path.insert(0, ROOT)

TASKS = ("semseg", "depth", "normals", "edges")
REFERENCE = "hard_sharing"

#: Decoders narrowed to about PAD-Net's parameter count on this encoder (recipe fields).
#: InvPT's three stages read P2-P4 (strides 4, 8, 16: P5 is at stride 16 too here); MLoRE works
#: on P3's grid (8x8; the paper's stride 16 would be 4x4 at 64 px), with the load-balancing loss
#: at the weight of its NYUD-v2 configuration.
SIZE: dict[str, dict] = {
    "padnet": {"head_kwargs": {"channels": 32}},
    "dpt": {"head_kwargs": {"features": 20}},
    "invpt": {
        "head_kwargs": {"embed_dim": 32, "prediction_channels": 16, "levels": ["P2", "P3", "P4"]}
    },
    "mlore": {"head_kwargs": {"channels": 24, "grid_level": "P3", "balance_weight": 5e-4}},
}
#: What a method needs to be the one its paper describes (recipe fields).
SETTINGS: dict[str, dict] = {
    "astmt": {"adversarial_weight": 0.01},  # its task discriminator, as recipes/astmt_*.py
    "hs_mgda": {"gradient_source": "representation"},  # MGDA-UB, the survey's MGDA
}

#: Data, size and length of the full and the quick study. The full study is 51 groups x 3 seeds
#: = 153 runs of 320 steps each (512 scenes, 5 epochs of batch 8) at the demo's 64x64; from the
#: measured trace and step times of every architecture (docs/architectures.md, "Trace times") and
#: the balancers' step-time ratios (README, benchmarks) it is estimated at about 3 hours on 2 idle
#: CPU cores, the 4 x 3 single-task runs included. The page reports the time it took.
FULL = {
    "image_size": (64, 64),
    "train_examples": 512,
    "val_examples": 128,
    "epochs": 5,
    "backbone_kwargs": {"width": 16, "output_stride": 16},
    "image_summaries": 0,
}
QUICK = {
    "image_size": (32, 32),
    "train_examples": 16,
    "val_examples": 8,
    "epochs": 1,
    "backbone_kwargs": {"width": 8, "output_stride": 16},
    "image_summaries": 0,
}
QUICK_GROUPS = ("single_*", REFERENCE, "hs_pcgrad")

INTRO = """# The survey's study on synthetic scenes

Vandenhende et al. (TPAMI 2022) compare single-task networks, encoder- and decoder-focused
architectures and hard sharing with loss and gradient balancers on NYUD-v2 and PASCAL-Context
(Tables 3-8). `benchmarks/synthetic_comparison.py` runs that study on the synthetic scenes at a
small size on CPU: every registered architecture and balancer, each with several seeds, on the
same backbone, heads and optimiser. The section below is written by the script (or rebuilt from
its results file by `mtl-keras compare docs/synthetic_comparison/results.json --page
docs/synthetic_comparison.md`); text outside it is kept.

"""

SCOPE = (
    "On these synthetic scenes, at this size and length of training and with these seeds, a ▲ or "
    "▼ says that a run's Δ_MTL differs from hard sharing's by more than the seeds' spread "
    "explains, with the caveat of many comparisons above; an unmarked run is not shown to differ "
    "(with 3 seeds only large differences can be marked). Nothing here ranks the methods on "
    "NYUD-v2 or PASCAL-Context: the survey trains ImageNet-pretrained ResNet-50 / HRNet-18 "
    "networks on real images at 480x640 / 512x512 for tens of epochs, while these networks are "
    "narrow, trained from scratch for a few minutes on 64x64 scenes whose tasks are all rendered "
    "from one scene layout, so the tasks' relations (how much they help or hurt each other) are "
    "not those of real scenes. Every balancer runs at its paper's defaults, untuned; short "
    "training favours methods that converge fast. The absolute numbers say how this code "
    "behaves, the survey's tables say how the methods behave on real data."
)


@dataclasses.dataclass
class Run:
    name: str
    group: str
    seed: int
    kind: str
    description: str
    recipe: object


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke version: 1 seed, a subset, tiny")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2; quick: 0)")
    p.add_argument(
        "--groups",
        help="comma-separated glob patterns of the groups to run (default "
        "all; quick: " + ",".join(QUICK_GROUPS) + ")",
    )
    p.add_argument("--out-dir", help="run folders (default runs/study[_quick])")
    p.add_argument(
        "--results",
        help="results file (default docs/synthetic_comparison/"
        "results.json; quick: OUT_DIR/results.json)",
    )
    p.add_argument(
        "--page",
        help="the page (default docs/synthetic_comparison.md; quick: "
        "OUT_DIR/docs/synthetic_comparison.md)",
    )
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--train-examples", type=int, help="override the training examples")
    p.add_argument("--list", action="store_true", help="print the runs and exit")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    args.tasks = tuple(t for t in args.tasks.split(",") if t)
    if len(args.tasks) < 2:
        p.error("the study needs at least two tasks")
    seeds = args.seeds or ("0" if args.quick else "0,1,2")
    try:
        args.seeds = tuple(int(s) for s in seeds.split(",") if s)
    except ValueError:
        p.error(f"--seeds takes comma-separated integers, got {seeds!r}")
    groups = args.groups.split(",") if args.groups else (QUICK_GROUPS if args.quick else ("*",))
    args.groups = tuple(g for g in groups if g)
    args.out_dir = args.out_dir or ("runs/study_quick" if args.quick else "runs/study")
    if args.quick:
        args.results = args.results or os.path.join(args.out_dir, "results.json")
        args.page = args.page or os.path.join(args.out_dir, "docs", "synthetic_comparison.md")
    args.results = args.results or os.path.join("docs", "synthetic_comparison", "results.json")
    args.page = args.page or os.path.join("docs", "synthetic_comparison.md")
    return args


def settings(args) -> dict:
    size = dict(QUICK if args.quick else FULL)
    if args.epochs:
        size["epochs"] = args.epochs
    if args.train_examples:
        size["train_examples"] = args.train_examples
    return size


def _first_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split()).rstrip(".")


def groups(args, base) -> list[tuple[str, str, str, object]]:
    """``[(group, kind, description, recipe)]``, every one the registries hold, in study order."""
    from mtl_keras import architectures, balancing

    found = []
    for task in args.tasks:
        recipe = dataclasses.replace(base, tasks=(task,), architecture="single_task")
        found.append((f"single_{task}", "single_task", "one network per task (a baseline)", recipe))
    for name in architectures.available():
        if name == "single_task":
            continue
        fields = {**SIZE.get(name, {}), **SETTINGS.get(name, {})}
        what = _first_line(architectures.ARCHITECTURES[name]).split(";")[0]
        found.append(
            (name, "architecture", what, dataclasses.replace(base, architecture=name, **fields))
        )
    for name in balancing.available():
        if name == "fixed":  # equal weights on hard sharing: the reference itself
            continue
        group = f"hs_{name}"
        recipe = dataclasses.replace(base, balancer=name, **SETTINGS.get(group, {}))
        found.append((group, "balancer", _first_line(balancing.BALANCERS[name]), recipe))
    return found


def plan(args) -> list[Run]:
    """The runs asked for: the matching groups, each once per seed."""
    from mtl_keras import recipes

    base = dataclasses.replace(
        recipes.get("demo"), tasks=args.tasks, run_dir=args.out_dir, **settings(args)
    )
    chosen = [
        g
        for g in groups(args, base)
        if any(fnmatch.fnmatchcase(g[0], pattern) for pattern in args.groups)
    ]
    if not chosen:
        raise SystemExit(f"no group matches {','.join(args.groups)}; see --list")
    runs = []
    for group, kind, description, recipe in chosen:
        for seed in args.seeds:
            name = f"{group}_s{seed}"
            runs.append(
                Run(
                    name,
                    group,
                    seed,
                    kind,
                    description,
                    dataclasses.replace(recipe, name=name, seed=seed),
                )
            )
    return runs


def _fingerprint(recipe) -> dict:
    from mtl_keras.training import resume

    return json.loads(json.dumps(resume.fingerprint(recipe), default=str))


def _record(run: Run, timing: dict | None) -> dict:
    """The record of ``run`` from its finished run folder."""
    from mtl_keras.evaluation import compare

    result = compare.read_run(run.recipe.output_dir)
    return {
        "run": run.name,
        "group": run.group,
        "seed": run.seed,
        "kind": run.kind,
        "description": run.description,
        "tasks": list(run.recipe.tasks),
        "metrics": result.metrics,
        "params": result.params,
        "flops": result.flops,
        "trivial_baseline": result.trivial,
        "recipe": _fingerprint(run.recipe),
        **(timing or {}),
    }


def finished(run: Run, content: dict) -> dict | None:
    """``run``'s record when it has finished with the same settings (from the results file, or
    from a run folder that finished before its record was written), else None.

    Raises:
        ValueError: the record or the run folder holds other settings.
    """
    from mtl_keras.evaluation import study
    from mtl_keras.training import resume

    record = study.find_record(content, run.name)
    if record is not None:
        wanted = _fingerprint(run.recipe)
        differ = sorted(k for k in wanted if (record.get("recipe") or {}).get(k) != wanted[k])
        if differ:
            raise ValueError(
                f"{run.name} is recorded with other {differ} than asked now; remove its record "
                "from the results file (or pass another --results) to train it again"
            )
        return record
    folder = run.recipe.output_dir
    if not os.path.exists(os.path.join(folder, "results.json")):
        return None
    differ = resume.recorded_differences(folder, run.recipe)
    if differ != []:
        settings = f"other {differ}" if differ else "unrecorded settings (no recipe.json)"
        raise ValueError(
            f"{folder} finished with {settings}, not those asked now; remove it (or pass another "
            "--out-dir) to train it again"
        )
    return _record(run, None)


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


def train_all(runs: list[Run], results: str, study_fields: dict) -> dict:
    """Train every unfinished run, writing the results file after each; returns its content."""
    import keras

    from mtl_keras.evaluation import study
    from mtl_keras.training import run as training

    content = study.load_results(results)
    content["study"] = {**content.get("study", {}), **study_fields}
    for i, run in enumerate(runs, 1):
        record = finished(run, content)
        if record is not None:
            print(f"[study] {i}/{len(runs)} {run.name}: finished before, reused", flush=True)
            study.put_record(content, record)
            continue
        print(
            f"[study] {i}/{len(runs)} {run.name}: training ({run.recipe.architecture}, "
            f"{run.recipe.balancer})",
            flush=True,
        )
        wall, cpu, load = time.time(), _cpu_seconds(), os.getloadavg()[0]
        training.train(run.recipe, verbose=0, export=False)
        timing = {
            "wall_s": round(time.time() - wall, 1),
            "cpu_s": round(_cpu_seconds() - cpu, 1),
            "load": round((load + os.getloadavg()[0]) / 2, 2),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        study.put_record(content, _record(run, timing))
        study.save_results(results, content)
        print(f"[study] {run.name}: {timing['wall_s']:.0f} s", flush=True)
        keras.backend.clear_session()
        gc.collect()
    study.save_results(results, content)
    return content


def describe(args, runs: list[Run]) -> str:
    """The page's setup paragraph."""
    from mtl_keras.training import building

    size = settings(args)
    h, w = size["image_size"]
    recipe = runs[0].recipe
    several = sorted({r.recipe.balancer for r in runs if building.batches_per_step(r.recipe) > 1})
    narrowed = "; ".join(f"{k}: {json.dumps(v)}" for k, v in {**SIZE, **SETTINGS}.items())
    return (
        f"Tasks {', '.join(args.tasks)}; {size['train_examples']} training and "
        f"{size['val_examples']} validation scenes at {h}x{w}; {size['epochs']} "
        f"epoch{'s' * (size['epochs'] != 1)} of batch {recipe.batch_size} (Adam, lr "
        f"{recipe.learning_rate:g}, weight decay {recipe.weight_decay:g}, poly schedule), so "
        f"every run makes {size['epochs'] * (size['train_examples'] // recipe.batch_size)} "
        f"updates; a balancer that takes k mini-batches a step ({', '.join(several) or 'none'}) "
        "reads the scenes k times for them, as LibMTL's trainer and the Auto-Lambda code do. "
        "Every "
        f"run: backbone {recipe.backbone} ({json.dumps(size['backbone_kwargs'])}), "
        f"{recipe.head} heads, equal loss weights unless a balancer is named, the seed seeding "
        "initialisation, data order and stochastic balancers (the scenes are the same for "
        f"every seed). Per-method fields: {narrowed}. Metrics on the validation scenes; the "
        "last row is the trivial constant predictor (majority class, mean depth, mean normal, "
        "constant edge probability) fitted on training labels."
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = plan(args)
    if args.list:
        for run in runs:
            print(f"{run.name}\t{run.kind}\t{run.description}")
        return 0
    import keras
    import tensorflow as tf

    from mtl_keras.evaluation import study

    start, cpu_start = time.time(), _cpu_seconds()
    with LoadSampler() as load:
        fields = {
            "command": shlex.join(["python", "benchmarks/synthetic_comparison.py", *args.argv]),
            "date": datetime.date.today().isoformat(),
            "machine": {
                "cpus": os.cpu_count() or 1,
                "processor": _processor(),
                "tf": tf.__version__,
                "keras": keras.__version__,
            },
            "settings": {**settings(args), "description": describe(args, runs)},
            "reference": REFERENCE,
            "alpha": 0.05,
            "seeds": list(args.seeds),
            "scope": SCOPE,
        }
        content = train_all(runs, args.results, fields)
    wall, cpu = time.time() - start, _cpu_seconds() - cpu_start
    samples = load.samples or [os.getloadavg()[0]]
    share = cpu / max(wall * (os.cpu_count() or 1), 1e-9)
    content["study"]["time_note"] = (
        f"the last sitting ran {wall / 60:.1f} min at a mean 1-minute load of "
        f"{sum(samples) / len(samples):.1f} on {os.cpu_count()} cores, this process getting "
        f"{share:.0%} of the machine"
    )
    study.save_results(args.results, content)
    table = study.rebuild(args.results, args.page, INTRO)
    print(table)
    print(f"[study] wrote {args.page} and {args.results} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
