"""Edge evaluation (odsF counts): CPU time per image for both protocols, and BSDS's counts.

Usage: ``python benchmarks/edge_eval.py [--images 3] [--size 480 640] [--settings survey invpt]
[--parallel-images 16] [--processes N] [--reference-images 1]``.

The settings: ``survey`` (99 thresholds 0.01 .. 0.99, max_dist 0.0075) and ``invpt`` (SEISM's 101
HED thresholds, max_dist 0.011, the NYUD-v2 tolerance of ATRC / InvPT / TaskPrompter: 8.8 px at
480x640, so bigger matching graphs). Soft edge maps are drawn like a trained network's output: a
decaying ridge around random true edges (``exp(-d / (H / 60))`` with multiplicative noise),
blurred background noise, quantised to 8 bits as SEISM reads them from PNG files.

For each setting it prints the CPU seconds (``time.process_time``, not wall time: the machine
may be shared) of `mtl_keras.metrics.boundary.image_counts` on each of ``--images`` maps, in this
process; then it evaluates ``--parallel-images`` other maps with `parallel_counts` on
``--processes`` processes (one image per job) and reports the workers' CPU seconds per image
(``RUSAGE_CHILDREN``, less the workers' start-up, measured by a pool of the same size on tiny
maps) and the projected time of NYUD-v2's 654 test images on that many processes,
``654 x CPU-s per image / processes + start-up``. The wall time is printed too, with the load
average: on a busy machine only the CPU time means anything.

On the first ``--reference-images`` maps it also checks the counts against BSDS's C++
``correspondPixels`` (pyEdgeEval 0.2.8's ``_lib``, on the maps thinned by `boundary.thin`, which
the tests check against scikit-image's ``thin``; pyEdgeEval's own evaluation imports OpenCV), and
prints its CPU seconds: BSDS draws random
outlier links (see `mtl_keras.metrics.boundary`), so its cntR may fall a little short of ours
on some cells, never above.

Measured on 2026-12-04 (480x640 maps; a 2-core machine shared with other jobs, load average
5 to 6.5 during the runs, so the wall times mean little), before and after the optimisations of
`mtl_keras.metrics.boundary` (pair graph by offset table, incremental thinning inputs, flow from
the smaller side, leaner thinning loop), same harness, 12 maps on 2 worker processes:

========================================  ==================  ==================
                                          survey (99, .0075)  invpt (101, .011)
========================================  ==================  ==================
CPU-s per image, one process, before      2.18 - 2.45         2.62 - 3.07
CPU-s per image, one process, after       1.17 - 1.30         1.36 - 1.39
CPU-s per image in 2 workers, before      2.25                2.87
CPU-s per image in 2 workers, after       1.18                1.46
654 images on 2 processes, before         12.3 min            15.7 min
654 images on 2 processes, after          6.5 min             8.0 min
========================================  ==================  ==================

(The earlier 22 min was the wall rate of 16 maps at 0.011 with 99 thresholds on the busy
machine, start-up included.) Where the time went (cProfile, invpt, one map, before -> after): max
flow 1.2 s -> 0.6 s (Dinic from the predicted side, which outnumbers the true pixels at most
thresholds, explores their large alternating trees; from the smaller side it is about 2x
faster), thinning 1.1 s -> 0.7 s (of which 0.14 s was rebuilding codes and border per threshold),
KD-tree pairs 0.3 s -> 0.03 s. BSDS's ``correspondPixels`` took 47 CPU-s (survey) and 58 CPU-s
(invpt) per map; its cntR fell short of ours by up to 7 pixels in 43/99 and 31/101 cells (random
outlier links), sumP equal everywhere.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
from scipy import ndimage

from mtl_keras.metrics import boundary

NYUD_TEST_IMAGES = 654
SETTINGS = {
    "survey": (boundary.default_thresholds(99), 0.0075),
    "invpt": (boundary.hed_thresholds(), 0.011),
}


def soft_edge_map(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(prediction in [0, 1] quantised to 1/255, binary label)`` of one synthetic image."""
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), bool)
    for _ in range(12):
        row = rng.integers(0, height)
        label[row, rng.integers(0, width // 2) : rng.integers(width // 2, width)] = True
        col = rng.integers(0, width)
        label[rng.integers(0, height // 2) : rng.integers(height // 2, height), col] = True
    distance = ndimage.distance_transform_edt(~label)
    soft = np.exp(-distance / (height / 60)) * rng.uniform(0.3, 1.0, (height, width))
    soft = ndimage.gaussian_filter(soft + 0.3 * rng.random((height, width)), 1.0)
    soft = np.clip(soft / soft.max(), 0.0, 1.0)
    return np.floor(soft * 255.0) / 255.0, label


def reference_counts(prediction, label, thresholds, max_dist) -> np.ndarray:
    """(cntR, sumR, cntP, sumP) per threshold from BSDS's C++ ``correspondPixels``."""
    from pyEdgeEval._lib import correspond_pixels

    counts = []
    for t in thresholds:
        edges = boundary.thin(prediction >= t)
        match1, match2, _, _ = correspond_pixels(edges, label, max_dist)
        counts.append([(match2 > 0).sum(), label.sum(), (match1 > 0).sum(), edges.sum()])
    return np.array(counts, np.int64)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pool_cpu(maps, thresholds, max_dist, processes) -> tuple[float, float]:
    """(workers' CPU seconds, wall seconds) of `parallel_counts` on ``maps``."""
    start, cpu = time.perf_counter(), _children_cpu()
    boundary.parallel_counts(
        [m[0] for m in maps],
        [m[1] for m in maps],
        thresholds=thresholds,
        max_dist=max_dist,
        processes=processes,
        progress=False,
    )
    return _children_cpu() - cpu, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640))
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--parallel-images", type=int, default=16)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference-images", type=int, default=1)
    args = parser.parse_args()
    height, width = args.size
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores")
    startup = None
    for name in args.settings:
        thresholds, max_dist = SETTINGS[name]
        radius = boundary.tolerance_pixels((height, width), max_dist)
        print(
            f"{name}: {args.images} maps {height}x{width}, {len(thresholds)} thresholds, "
            f"max_dist {max_dist} ({radius:.1f} px)"
        )
        cpu_total = 0.0
        for i in range(args.images):
            prediction, label = soft_edge_map(height, width, seed=i)
            cpu_start = time.process_time()
            ours = boundary.image_counts(prediction, label, thresholds, max_dist)
            cpu = time.process_time() - cpu_start
            cpu_total += cpu
            line = f"  image {i}: {cpu:5.2f} CPU-s"
            if i < args.reference_images:
                try:
                    cpu_start = time.process_time()
                    reference = reference_counts(prediction, label, thresholds, max_dist)
                    reference_cpu = time.process_time() - cpu_start
                except ImportError as error:
                    line += f"  (no BSDS reference: {error})"
                else:
                    diff = ours - reference
                    line += (
                        f"  BSDS {reference_cpu:5.2f} CPU-s; sumP equal in "
                        f"{int((diff[:, 3] == 0).sum())}/{len(thresholds)}, cntR differs in "
                        f"{int((diff[:, 0] != 0).sum())} cells (ours - BSDS in "
                        f"[{int(diff[:, 0].min())}, {int(diff[:, 0].max())}])"
                    )
            print(line, flush=True)
        if args.images:
            print(f"  one process: {cpu_total / args.images:.2f} CPU-s per image")

        if args.parallel_images and args.processes > 1:
            if startup is None:  # the workers' start-up (spawn, imports), on tiny maps
                tiny = [soft_edge_map(16, 16, seed=i) for i in range(args.processes)]
                startup, _ = _pool_cpu(tiny, thresholds, max_dist, args.processes)
            maps = [soft_edge_map(height, width, 100 + i) for i in range(args.parallel_images)]
            cpu, wall = _pool_cpu(maps, thresholds, max_dist, args.processes)
            per_image = max(cpu - startup, 0.0) / args.parallel_images
            projected = NYUD_TEST_IMAGES * per_image / args.processes + startup / args.processes
            print(
                f"  {args.parallel_images} maps on {args.processes} processes: "
                f"{per_image:.2f} CPU-s per image in the workers (start-up {startup:.1f} CPU-s "
                f"left out), {wall:.1f} s wall; projected {NYUD_TEST_IMAGES} images on "
                f"{args.processes} processes: {projected / 60:.1f} min "
                f"(load average now {os.getloadavg()[0]:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
