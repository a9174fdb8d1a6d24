"""Trace time, steady step time and graph size of every registered architecture's training step.

Usage::

    python benchmarks/trace_times.py [--archs NAME,...] [--tasks semseg,depth,normals,edges]
        [--steady N] [--quick] [--markdown PATH]

Every architecture of ``mtl_keras.architectures.available()`` is built, each in a fresh
``keras.backend.clear_session()``, with the demo recipe's settings (``recipes/demo.py``: ResNet-18
family backbone of width 16 at output stride 16, HRNet-style heads, 64x64 images, Adam with weight
decay 1e-4 and a poly schedule, batch 8) and the fields ``benchmarks/synthetic_comparison`` gives
an architecture's run (its ``SIZE`` and ``SETTINGS``: PAD-Net's, DPT's, InvPT's and MLoRE's
narrowed decoders, ASTMT's adversarial discriminator), on
``--tasks`` (``single_task`` on the first of them), wrapped in the recipe's ``MultiTaskModel`` and
compiled as a run compiles it (``mtl_keras.training.building.build_model``, no XLA on CPU). Then:

* **first step**: the first ``train_on_batch``, i.e. tracing the step into a graph, Grappler's
  optimisation of that graph and one execution (wall and CPU seconds of this process);
* **steady step**: the median of ``--steady`` further steps on the same batch;
* **graph ops**: the operations of the traced step function (the graph Keras's ``tf.function``
  traces around ``train_step``), and how many of them the optimizer's update adds (its name
  scope) and the backward pass (``gradient_tape``).

Prints a markdown table (``--markdown PATH`` also writes it, with the date, machine, versions and
command). ``--quick`` is a smoke version (32x32 images, width 8, one steady step).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "benchmarks")):  # ``recipes``, ``synthetic_comparison``
    if path not in sys.path:
        sys.path.insert(0, path)

TASKS = ("semseg", "depth", "normals", "edges")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--archs", default="", help="comma-separated architectures (default: all)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--steady", type=int, default=3, help="steps after the first to time")
    p.add_argument("--quick", action="store_true", help="smoke version: 32x32, width 8")
    p.add_argument("--markdown", help="also write the table (with its context) to this file")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    args.tasks = tuple(t for t in args.tasks.split(",") if t)
    args.archs = tuple(a for a in args.archs.split(",") if a)
    if args.quick:
        args.steady = min(args.steady, 1)
    return args


def architecture_fields(arch: str) -> dict:
    """The recipe fields ``synthetic_comparison`` gives ``arch``'s run: its ``SIZE`` (narrowed
    decoders) and ``SETTINGS`` (e.g. ASTMT's adversarial discriminator)."""
    from synthetic_comparison import SETTINGS, SIZE

    return {"architecture": arch, **SIZE.get(arch, {}), **SETTINGS.get(arch, {})}


def recipe_for(arch: str, tasks, quick: bool):
    from recipes import demo

    fields = {
        **architecture_fields(arch),
        "name": f"trace_{arch}",
        "tasks": tuple(tasks[:1]) if arch == "single_task" else tuple(tasks),
    }
    recipe = demo.recipe()
    fields["train_examples"] = fields["val_examples"] = recipe.batch_size
    if quick:
        fields["image_size"] = (32, 32)
        fields["backbone_kwargs"] = {**recipe.backbone_kwargs, "width": 8}
    return dataclasses.replace(recipe, **fields)


def measure(arch: str, tasks, steady: int, quick: bool) -> dict:
    """Build ``arch`` in a fresh session and time its first and steady training steps."""
    import keras
    import tensorflow as tf

    from mtl_keras.training import building

    keras.backend.clear_session()
    gc.collect()
    recipe = recipe_for(arch, tasks, quick)
    building.set_seed(recipe.seed)
    bundle = building.load_data(recipe)
    specs = building.task_specs(recipe, bundle.task_options)
    start = time.perf_counter()
    model = building.build_model(recipe, specs, steps=100)
    build_s = time.perf_counter() - start
    x, y = next(iter(bundle.train))[:2]

    graphs = []
    train_step = model.train_step

    def recording_step(data):  # runs once per trace, inside Keras's tf.function
        graphs.append(tf.compat.v1.get_default_graph())
        return train_step(data)

    model.train_step = recording_step  # read by make_train_function on the first step
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(x, y)
    first_s, first_cpu = time.perf_counter() - wall, time.process_time() - cpu
    times = []
    for _ in range(steady):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    names = [op.name for op in graphs[-1].get_operations()] if graphs else []
    scope = model.optimizer.name + "/"
    return {
        "architecture": arch if arch != "single_task" else f"single_task ({tasks[0]})",
        "variables": len(model.trainable_variables),
        "ops": len(names),
        "optimizer_ops": sum(n.startswith(scope) for n in names),
        "gradient_ops": sum(n.startswith("gradient_tape/") for n in names),
        "traces": len(graphs),
        "build_s": build_s,
        "first_s": first_s,
        "first_cpu_s": first_cpu,
        "steady_s": statistics.median(times) if times else float("nan"),
        "load": load,
    }


def table(rows) -> str:
    lines = [
        "| architecture | trainable variables | graph ops | optimizer ops | backward ops | "
        "first step (s) | first step CPU (s) | steady step (s) | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['architecture']} | failed: {r['error']} |||||||| ")
            continue
        lines.append(
            f"| {r['architecture']} | {r['variables']:,} | {r['ops']:,} | "
            f"{r['optimizer_ops']:,} | {r['gradient_ops']:,} | {r['first_s']:.1f} | "
            f"{r['first_cpu_s']:.1f} | {r['steady_s']:.2f} | {r['load']:.1f} |"
        )
    return "\n".join(lines)


def context(args) -> str:
    import keras
    import tensorflow as tf

    command = "python benchmarks/trace_times.py " + shlex.join(args.argv)
    return (
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()} with "
        f"{os.cpu_count()} CPU cores (Python {platform.python_version()}, TensorFlow "
        f"{tf.__version__}, Keras {keras.__version__}, no XLA), tasks {', '.join(args.tasks)}, "
        f"with\n\n```\n{command.strip()}\n```\n\n"
        "'load' is the 1-minute load average when the first step started (the machine may be "
        "shared: compare the CPU seconds, which count this process only)."
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from mtl_keras import architectures

    archs = args.archs or tuple(architectures.available())
    unknown = sorted(set(archs) - set(architectures.available()))
    if unknown:
        raise SystemExit(f"unknown architecture(s) {unknown}; valid: {architectures.available()}")
    rows = []
    for arch in archs:
        try:
            row = measure(arch, args.tasks, args.steady, args.quick)
        except Exception as e:  # noqa: BLE001 - one failing architecture must not end the table
            row = {"architecture": arch, "error": f"{type(e).__name__}: {e}"[:200]}
        rows.append(row)
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    text = table(rows)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(context(args) + "\n\n" + text + "\n")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
