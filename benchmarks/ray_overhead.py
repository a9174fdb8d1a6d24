"""Training throughput of 1 and 2 local Ray workers against 1 and 2 plain TF_CONFIG processes.

Usage::

    python benchmarks/ray_overhead.py [--steps 48] [--warmup-steps 4] [--rounds 2]
                                      [--set KEY=VALUE ...]

The demo recipe (64 x 64 synthetic scenes, hard sharing, six tasks) trains one epoch of
``--warmup-steps`` steps (tracing, first collectives) and one of ``--steps`` steps, global batch 8,
in four settings, all with ``strategy="multi_worker"`` so that the training step is the same:

* ``plain 1``, ``plain 2``: 1 or 2 processes started here with ``TF_CONFIG`` on 127.0.0.1;
* ``ray 1``, ``ray 2``: :func:`~mtl_keras.training.ray_launcher.train_on_ray` on a local cluster.

Every worker gets ``cores / workers`` CPUs: Ray reserves them and sets that many TensorFlow
intra-op threads; a plain process gets the same threads (``TF_NUM_INTRAOP_THREADS``). The
settings are interleaved for ``--rounds`` rounds (one shared machine's load drifts). The chief
times its second-epoch steps: ms/step is their median, images/s the global batch over it. A job's
wall time (start-up, both epochs, evaluation) is reported apart: it is paid once per job, not per
step.

Ray's overhead per step is ``ray N`` minus ``plain N`` in ms/step; the noise it is compared with
is the spread of the plain runs' own step times (half their interquartile range). The last line
is ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StepTimes(keras.callbacks.Callback):
    """The chief writes the wall-clock end times of its last epoch's steps (and that epoch's
    start first) to ``path`` as JSON."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([time.time()])

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1].append(time.time())

    def on_train_end(self, logs=None):
        raw = os.environ.get("TF_CONFIG")
        if not raw or json.loads(raw)["task"]["index"] == 0:
            with open(self.path, "w") as f:
                json.dump(self.epochs[-1], f)


def _recipe(steps: int, warmup: int, overrides: list[str], root: str):
    from mtl_keras import recipes

    return recipes.get("demo").with_overrides(
        [
            "epochs=2",
            f"steps_per_epoch={max(steps, warmup)}",
            f"train_examples={8 * max(steps, warmup)}",
            "val_examples=8",
            "image_summaries=0",
            "strategy=multi_worker",
            f"run_dir={root}/runs",
            *overrides,
        ]
    )


def _plain(workers: int, args, root: str) -> tuple[dict, float]:
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    out = os.path.join(root, "times.json")
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    start = time.time()
    processes = []
    for i in range(workers):
        config = {
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": i},
        }
        command = [sys.executable, __file__, "--plain-worker", out, "--root", root]
        command += ["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
        command += [a for kv in args.set for a in ("--set", kv)]
        processes.append(
            subprocess.Popen(
                command,
                env={**env, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in processes:
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"a plain worker failed:\n{err[-3000:]}")
    with open(out) as f:
        return json.load(f), time.time() - start


def _on_ray(workers: int, args, root: str) -> tuple[dict, float]:
    from mtl_keras.training.ray_launcher import train_on_ray

    out = os.path.join(root, "times.json")
    start = time.time()
    train_on_ray(
        _recipe(args.steps, args.warmup_steps, args.set, root),
        workers=workers,
        cpus_per_worker=max(1, (os.cpu_count() or 1) // workers),
        verbose=0,
        export=False,
        callbacks=[StepTimes(out)],
    )
    with open(out) as f:
        return json.load(f), time.time() - start


def _plain_worker(args) -> None:
    from mtl_keras.training import run

    recipe = _recipe(args.steps, args.warmup_steps, args.set, args.root)
    run.train(recipe, verbose=0, export=False, callbacks=[StepTimes(args.plain_worker)])


def _quartiles(values):
    q = statistics.quantiles(values, n=4)
    return q[0], q[1], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48, help="timed steps (second epoch)")
    parser.add_argument("--warmup-steps", type=int, default=4, help="steps of the first epoch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--plain-worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        return _plain_worker(args)

    import ray

    temp = tempfile.mkdtemp(prefix="mtl-ray-bench-")
    cores = os.cpu_count() or 1
    ray.init(
        num_cpus=cores,
        include_dashboard=False,
        logging_level="ERROR",
        logging_config=ray.LoggingConfig(log_level="ERROR"),
        _system_config={"worker_niceness": 0},  # as train_on_ray's local cluster
        _temp_dir=temp,
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    settings = [("plain", 1), ("ray", 1), ("plain", 2), ("ray", 2)]
    steps = {s: [] for s in settings}
    wall = {s: [] for s in settings}
    try:
        for round_ in range(args.rounds):
            for setting in settings if round_ % 2 == 0 else settings[::-1]:
                with tempfile.TemporaryDirectory(prefix="mtl-bench-") as root:
                    launch = _plain if setting[0] == "plain" else _on_ray
                    times, seconds = launch(setting[1], args, root)
                steps[setting] += [1e3 * (b - a) for a, b in zip(times, times[1:])]
                wall[setting].append(seconds)
                print(f"round {round_ + 1}: {setting[0]} {setting[1]} done", file=sys.stderr)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    batch = 8
    result = {"cores": cores, "global_batch": batch, "timed_steps": args.steps}
    print(
        f"{'launcher':<10}{'workers':>8}{'ms/step':>10}{'IQR ms':>14}{'images/s':>10}{'job s':>8}"
    )
    for setting in settings:
        q1, median, q3 = _quartiles(steps[setting])
        name = f"{setting[0]}_{setting[1]}"
        result[name] = {
            "ms_per_step": round(median, 1),
            "iqr_ms": [round(q1, 1), round(q3, 1)],
            "images_per_s": round(batch / median * 1e3, 2),
            "job_s": round(statistics.median(wall[setting]), 1),
        }
        print(
            f"{setting[0]:<10}{setting[1]:>8}{median:>10.1f}{f'{q1:.0f}-{q3:.0f}':>14}"
            f"{batch / median * 1e3:>10.2f}{statistics.median(wall[setting]):>8.1f}"
        )
    for workers in (1, 2):
        plain, on_ray = result[f"plain_{workers}"], result[f"ray_{workers}"]
        noise = (plain["iqr_ms"][1] - plain["iqr_ms"][0]) / 2
        overhead = on_ray["ms_per_step"] - plain["ms_per_step"]
        result[f"ray_overhead_{workers}"] = {
            "ms_per_step": round(overhead, 1),
            "percent": round(100 * overhead / plain["ms_per_step"], 1),
            "noise_ms": round(noise, 1),
            "job_s": round(on_ray["job_s"] - plain["job_s"], 1),
        }
        print(
            f"{workers} worker(s): Ray adds {overhead:+.1f} ms/step "
            f"({100 * overhead / plain['ms_per_step']:+.1f}%) against a plain-run noise of "
            f"±{noise:.1f} ms, and {on_ray['job_s'] - plain['job_s']:+.1f} s per job"
        )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
