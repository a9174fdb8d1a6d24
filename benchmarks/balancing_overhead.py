"""Step time and peak memory of every balancing method relative to equal weighting.

Usage::

    python benchmarks/balancing_overhead.py [--sizes 64 128] [--tasks 3 6] [--methods ...]
                                            [--steps 10] [--batch 8] [--markdown out.md]

For each image size and task count, every method trains the demo architecture (hard sharing,
ResNet-18 family backbone at the demo's width, HRNet-style heads) on synthetic scenes in a fresh
process: a warm-up of 3 steps traces the step, then ``--steps`` steps are timed. Peak memory is the
growth of the process's maximum resident set over the timed phase plus warm-up, measured from
just before the first step. Ratios divide by the ``fixed`` (equal weights) run of the same
configuration measured in the same invocation. Gradient methods run in their preferred source
(``"shared"`` variables unless the method only accepts the representation); MGDA is also run in
representation mode (``mgda_ub``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("semseg", "depth", "normals", "edges", "saliency", "human_parts")


def worker(method: str, size: int, num_tasks: int, steps: int, batch: int) -> dict:
    from mtl_keras.data import load_synthetic
    from mtl_keras.training import run
    from mtl_keras.training.recipe import Recipe

    tasks = TASKS[:num_tasks]
    name, source = ("mgda", "representation") if method == "mgda_ub" else (method, "auto")
    kwargs = {"seed": 0} if name in ("rlw", "pcgrad", "graddrop", "gradvac") else {}
    recipe = Recipe(
        name="bench",
        tasks=tasks,
        image_size=(size, size),
        batch_size=batch,
        backbone="resnet18",
        backbone_kwargs={"width": 16, "output_stride": 16},
        head="hrnet",
        balancer=name,
        balancer_kwargs=kwargs,
        gradient_source=source,
        jit_compile=False,
    )
    bundle = load_synthetic(
        tasks,
        image_size=(size, size),
        train_examples=batch * 4,
        val_examples=batch,
        batch_size=batch,
    )
    specs = run.task_specs(recipe, bundle.task_options)
    model = run.build_model(recipe, specs, steps=1000)
    data = bundle.train.repeat()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    elapsed = (time.perf_counter() - start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return {
        "method": method,
        "size": size,
        "tasks": num_tasks,
        "step_s": elapsed,
        "peak_kb": max(peak, 1),
        "source": model.gradient_source or "loss",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument(
        "--worker", nargs=3, metavar=("METHOD", "SIZE", "TASKS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        method, size, tasks = args.worker
        print("RESULT " + json.dumps(worker(method, int(size), int(tasks), args.steps, args.batch)))
        return
    from mtl_keras import balancing

    methods = args.methods or [
        "fixed",
        "mgda_ub",
        *[m for m in balancing.available() if m != "fixed"],
    ]
    if "fixed" not in methods:
        methods = ["fixed", *methods]
    rows = []
    for size in args.sizes:
        for t in args.tasks:
            base = None
            for m in methods:
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    m,
                    str(size),
                    str(t),
                    "--steps",
                    str(args.steps),
                    "--batch",
                    str(args.batch),
                ]
                out = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                )
                line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                if not line:
                    print(f"{m} {size} {t}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                r = json.loads(line[0][7:])
                base = r if m == "fixed" else base
                r["time_ratio"] = r["step_s"] / base["step_s"]
                r["mem_ratio"] = r["peak_kb"] / base["peak_kb"]
                rows.append(r)
                print(
                    f"{size:>4} {t} {m:<12} {r['source']:<15} {r['step_s'] * 1e3:8.1f} ms "
                    f"{r['time_ratio']:5.2f}x  mem {r['mem_ratio']:5.2f}x",
                    flush=True,
                )
    table = [
        "| size | T | method | source | step (ms) | time / equal | peak mem / equal |",
        "|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['size']} | {r['tasks']} | {r['method']} | {r['source']} | "
        f"{r['step_s'] * 1e3:.1f} | {r['time_ratio']:.2f} | {r['mem_ratio']:.2f} |"
        for r in rows
    ]
    print("\n".join(table))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
