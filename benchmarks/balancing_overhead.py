"""Step time and peak memory of every balancing method relative to equal weighting.

Usage::

    python benchmarks/balancing_overhead.py [--sizes 64 128] [--tasks 3 6] [--methods ...]
                                            [--rounds 5] [--steps 3] [--batch 8]
                                            [--memory-sizes 128] [--memory-tasks 3 6]
                                            [--markdown out.md]

Every method trains the demo architecture (hard sharing, ResNet-18 family backbone at the demo's
width 16, output stride 16, HRNet-style heads) on synthetic scenes with batch 8.

**Time.** For each image size and task count, one process builds a model per method, traces its
step, then runs ``--rounds`` rounds; in each round every method (in a rotated order) runs
``--steps`` steps. A method's step time is the median over rounds, in wall-clock and in process
CPU time. Interleaving the methods makes the ratios robust to load that changes during the run (a
shared machine); CPU time is reported because it is the steadier of the two when other processes
hold the cores.

**Memory.** For the ``--memory-sizes``, every method runs in a fresh process (warm-up and two
steps); its peak memory is the growth of the process's maximum resident set above its resident set
just before the model is built (model, optimizer, traced step and its activations; the TensorFlow
runtime and the data are left out).

**Multi-batch methods** (SDMGrad, MoDo: ``needs.batches`` mini-batches of ``--batch`` per step,
batched as a recipe's data is) are reported per mini-batch consumed: their step time is divided by
that count (their peak memory is that of a step).

Ratios divide by the ``fixed`` (equal weights) run of the same configuration. The ``jacobian`` row
is the floor of every full-Jacobian method: the per-task gradients of the shared variables combined
with equal weights and no aggregation work; "/ Jacobian floor" is each shared-source method's CPU
time over it. Gradient methods run in their preferred source (``"shared"`` variables unless the
method only accepts the representation); MGDA also runs in representation mode (``mgda_ub``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

TASKS = ("semseg", "depth", "normals", "edges", "saliency", "human_parts")
STOCHASTIC = ("rlw", "pcgrad", "graddrop", "gradvac")


def _rss_kb() -> int:
    """Current resident set size of this process (Linux), in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _jacobian_reference():
    """The floor of every full-Jacobian method: the per-task gradients of the shared variables
    (T backward passes, all-reduced, Gramian formed) combined with equal weights, with no
    aggregation work at all. Not a registered balancer: only the benchmark's reference."""
    import tensorflow as tf

    from mtl_keras.balancing.base import GradientBalancer

    class JacobianMean(GradientBalancer):
        sources = ("shared",)

        def weights_from_gramian(self, gramian, losses, step):
            t = tf.shape(gramian)[0]
            return tf.ones([t], tf.float32) / tf.cast(t, tf.float32)

    return JacobianMean(name="jacobian_mean")


def _data(size: int, num_tasks: int, batch: int):
    from mtl_keras.data import load_synthetic

    tasks = TASKS[:num_tasks]
    return load_synthetic(
        tasks,
        image_size=(size, size),
        train_examples=batch * 4,
        val_examples=batch,
        batch_size=batch,
    )


def _model(method: str, size: int, bundle, batch: int):
    """A compiled trainer for ``method`` on the demo architecture."""
    import keras

    from mtl_keras.training import MultiTaskModel, building
    from mtl_keras.training.recipe import Recipe

    name, source = ("mgda", "representation") if method == "mgda_ub" else (method, "auto")
    recipe = Recipe(
        name="bench",
        tasks=tuple(bundle.train.element_spec[1]),
        image_size=(size, size),
        batch_size=batch,
        backbone="resnet18",
        backbone_kwargs={"width": 16, "output_stride": 16},
        head="hrnet",
        balancer="fixed" if method == "jacobian" else name,
        balancer_kwargs={"seed": 0} if name in STOCHASTIC else {},
        gradient_source=source,
        jit_compile=False,
    )
    keras.utils.set_random_seed(0)
    specs = building.task_specs(recipe, bundle.task_options)
    if method == "jacobian":
        model = MultiTaskModel(
            building.build_network(recipe, specs), list(specs.values()), _jacobian_reference()
        )
        model.compile(optimizer=building.make_optimizer(recipe, 1000), jit_compile=False)
        return model
    return building.build_model(recipe, specs, steps=1000)


def _step_batches(bundle, batches: int, batch: int):
    """The endless training stream with ``batches`` mini-batches of ``batch`` per step."""
    from mtl_keras.training import building

    return building.batched_per_step(bundle, batches, batch).train.repeat()


def time_worker(methods: list[str], size: int, num_tasks: int, rounds: int, steps: int, batch):
    """Median wall and CPU seconds per mini-batch consumed (a step, but for multi-batch
    methods) of every method, measured interleaved."""
    import tensorflow as tf

    bundle = _data(size, num_tasks, batch)
    steps_fn, sources, per_step, streams = {}, {}, {}, {}
    for m in methods:
        model = _model(m, size, bundle, batch)
        k = per_step[m] = model.balancer.needs.batches
        if k not in streams:  # k mini-batches per step
            streams[k] = list(_step_batches(bundle, k, batch).take(steps))
        fn = tf.function(model.train_step)
        fn(streams[k][0])  # trace and warm up
        fn(streams[k][-1])
        steps_fn[m], sources[m] = fn, model.gradient_source or "loss"
    wall = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    for r in range(rounds):
        order = methods[r % len(methods) :] + methods[: r % len(methods)]
        for m in order:
            batches = streams[per_step[m]]
            w, c = time.perf_counter(), time.process_time()
            for b in batches:
                logs = steps_fn[m](b)
            float(logs["loss"])  # wait for the last step
            consumed = len(batches) * per_step[m]  # mini-batches
            wall[m].append((time.perf_counter() - w) / consumed)
            cpu[m].append((time.process_time() - c) / consumed)
    return {
        m: {
            "step_s": statistics.median(wall[m]),
            "cpu_s": statistics.median(cpu[m]),
            "source": sources[m],
        }
        for m in methods
    }


def memory_worker(method: str, size: int, num_tasks: int, batch: int) -> dict:
    """Peak resident-set growth (KiB) of building and training ``method`` for a few steps."""
    bundle = _data(size, num_tasks, batch)
    rss0 = _rss_kb()
    model = _model(method, size, bundle, batch)
    stream = _step_batches(bundle, model.balancer.needs.batches, batch)
    model.fit(stream, steps_per_epoch=3, epochs=1, verbose=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return {"peak_kb": max(peak, 1)}


def _run_worker(args: list[str]) -> dict | None:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        print(f"worker {args} failed\n{out.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(line[0][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per method and round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[128])
    parser.add_argument("--memory-tasks", type=int, nargs="*", default=None, help="default: all")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--time-worker", nargs=3, metavar=("METHODS", "SIZE", "T"))
    parser.add_argument("--memory-worker", nargs=3, metavar=("METHOD", "SIZE", "T"))
    args = parser.parse_args()
    if args.time_worker:
        methods, size, t = args.time_worker
        result = time_worker(
            methods.split(","), int(size), int(t), args.rounds, args.steps, args.batch
        )
        print("RESULT " + json.dumps(result))
        return
    if args.memory_worker:
        method, size, t = args.memory_worker
        print("RESULT " + json.dumps(memory_worker(method, int(size), int(t), args.batch)))
        return

    from mtl_keras import balancing

    methods = args.methods or [
        "jacobian",
        "mgda_ub",
        *[m for m in balancing.available() if m != "fixed"],
    ]
    methods = ["fixed", *[m for m in methods if m != "fixed"]]
    common = ["--rounds", str(args.rounds), "--steps", str(args.steps), "--batch", str(args.batch)]
    rows = []
    for size in args.sizes:
        for t in args.tasks:
            timed = _run_worker(["--time-worker", ",".join(methods), str(size), str(t), *common])
            if timed is None:
                continue
            mem = {}
            if size in args.memory_sizes and t in (args.memory_tasks or args.tasks):
                for m in methods:
                    r = _run_worker(["--memory-worker", m, str(size), str(t), *common])
                    mem[m] = r["peak_kb"] if r else None
            base, jac = timed["fixed"], timed.get("jacobian")
            for m in methods:
                r = {"method": m, "size": size, "tasks": t, **timed[m]}
                r["time_ratio"] = r["step_s"] / base["step_s"]
                r["cpu_ratio"] = r["cpu_s"] / base["cpu_s"]
                r["cpu_vs_jacobian"] = (
                    r["cpu_s"] / jac["cpu_s"] if jac and r["source"] == "shared" else None
                )
                r["mem_ratio"] = mem[m] / mem["fixed"] if mem.get(m) and mem.get("fixed") else None
                rows.append(r)
                print(
                    f"{size:>4} {t} {m:<12} {r['source']:<15} {r['step_s'] * 1e3:8.1f} ms "
                    f"{r['time_ratio']:5.2f}x  cpu {r['cpu_ratio']:5.2f}x"
                    + (f"  mem {r['mem_ratio']:5.2f}x" if r["mem_ratio"] else ""),
                    flush=True,
                )

    def fmt(v):
        return "-" if v is None else f"{v:.2f}"

    table = [
        "| size | T | method | source | ms per batch consumed | time / equal | CPU time / equal "
        "| / Jacobian floor | peak mem / equal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table += [
        f"| {r['size']} | {r['tasks']} | {r['method']} | {r['source']} | "
        f"{r['step_s'] * 1e3:.1f} | {fmt(r['time_ratio'])} | {fmt(r['cpu_ratio'])} | "
        f"{fmt(r['cpu_vs_jacobian'])} | {fmt(r['mem_ratio'])} |"
        for r in rows
    ]
    print("\n".join(table))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
