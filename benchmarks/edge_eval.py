"""Edge evaluation (odsF counts) against pyEdgeEval, measured side by side in one run.

Usage: ``python benchmarks/edge_eval.py [--images 3] [--size 480 640] [--max-dist 0.011]
[--thresholds 99] [--parallel-images 16] [--processes N] [--skip-reference]``.

Soft edge maps are drawn like a trained network's output: a decaying ridge around random true
edges (``exp(-d / (H / 60))`` with multiplicative noise), blurred background noise, quantised to
8 bits as SEISM reads them from PNG files. For each image it prints the seconds per image of
`mtl_keras.metrics.boundary.image_counts` and of pyEdgeEval 0.2.8's
``evaluate_boundaries_threshold`` (BSDS's C++ ``correspondPixels``), their ratio, and whether the
counts agree (cells where they differ, and by how much: BSDS draws random outlier links, see
`mtl_keras.metrics.boundary`). Then it evaluates ``--parallel-images`` maps with
`parallel_counts` over all cores and projects the time of NYUD-v2's 654 test images. Both
implementations run in this process, one after the other, so a busy machine slows both alike.
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


def reference_counts(prediction, label, thresholds, max_dist):
    from pyEdgeEval.common.binary_label.evaluate_boundaries import (
        evaluate_boundaries_threshold,
    )

    out = evaluate_boundaries_threshold(thresholds, prediction, label, max_dist=max_dist)
    return np.stack(out, axis=1).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640))
    parser.add_argument("--max-dist", type=float, default=0.011)
    parser.add_argument("--thresholds", type=int, default=99)
    parser.add_argument("--parallel-images", type=int, default=16)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    height, width = args.size
    thresholds = boundary.default_thresholds(args.thresholds)
    print(
        f"{args.images} maps {height}x{width}, {len(thresholds)} thresholds, max_dist "
        f"{args.max_dist} ({boundary.tolerance_pixels((height, width), args.max_dist):.1f} px)"
    )
    ours_total = reference_total = 0.0
    for i in range(args.images):
        prediction, label = soft_edge_map(height, width, seed=i)
        start, cpu_start = time.perf_counter(), time.process_time()
        ours = boundary.image_counts(prediction, label, thresholds, args.max_dist)
        ours_s = time.perf_counter() - start
        ours_cpu = time.process_time() - cpu_start
        ours_total += ours_s
        line = f"image {i}: mtl_keras {ours_s:6.2f} s ({ours_cpu:5.2f} CPU-s)"
        if not args.skip_reference:
            start = time.perf_counter()
            reference = reference_counts(prediction, label, thresholds, args.max_dist)
            reference_s = time.perf_counter() - start
            reference_total += reference_s
            diff = ours - reference
            line += (
                f"  pyEdgeEval {reference_s:6.2f} s  ratio {ours_s / reference_s:5.3f}  "
                f"sumP equal {int((diff[:, 3] == 0).sum())}/{len(thresholds)}  cntR differ in "
                f"{int((diff[:, 0] != 0).sum())} cells (ours - BSDS in "
                f"[{int(diff[:, 0].min())}, {int(diff[:, 0].max())}])"
            )
        print(line, flush=True)
    summary = f"per image: mtl_keras {ours_total / args.images:.2f} s"
    if not args.skip_reference:
        summary += (
            f", pyEdgeEval {reference_total / args.images:.2f} s, ratio "
            f"{ours_total / reference_total:.3f}"
        )
    print(summary)

    if args.parallel_images:
        maps = [soft_edge_map(height, width, seed=100 + i) for i in range(args.parallel_images)]
        start = time.perf_counter()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        boundary.parallel_counts(
            [m[0] for m in maps],
            [m[1] for m in maps],
            thresholds=thresholds,
            max_dist=args.max_dist,
            processes=args.processes,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        per_image = wall / args.parallel_images
        cpu_per_image = cpu / args.parallel_images
        print(
            f"parallel: {args.parallel_images} maps on {args.processes} processes in {wall:.1f} s "
            f"wall ({per_image:.2f} s per image, start-up included), {cpu_per_image:.2f} CPU-s "
            f"per image in the workers; projected {NYUD_TEST_IMAGES} images: "
            f"{NYUD_TEST_IMAGES * per_image / 60:.1f} min at this wall rate, "
            f"{NYUD_TEST_IMAGES * cpu_per_image / args.processes / 60:.1f} min on "
            f"{args.processes} free cores"
        )


if __name__ == "__main__":
    main()
