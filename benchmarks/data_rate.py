"""Generation rate of the synthetic scenes, against the demo model's training rate.

Usage: ``python benchmarks/data_rate.py [--images 600] [--workers N] [--train-steps 30]``.
Renders fresh examples
(image and all six labels) through `SyntheticScenes.arrays` and prints, for 64x64 and 128x128,
images per second of wall-clock time and the process CPU time per image. On a shared machine the
CPU time is the steadier of the two: wall-clock rates fall when other processes hold the cores.
"""

from __future__ import annotations

import argparse
import os
import time

from mtl_keras.data.synthetic import SyntheticScenes


def measure(size: tuple[int, int], workers: int, count: int) -> tuple[float, float]:
    """``(images per wall-clock second, CPU milliseconds per image)`` for ``count`` examples."""
    scenes = SyntheticScenes(image_size=size, seed=0)
    scenes.example(0, "val")  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    scenes.arrays("train", count, num_workers=workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return count / wall, 1e3 * cpu / count


def training_rate(steps: int) -> float:
    """Images per second of ``model.fit`` on the demo recipe's model and data (after warm-up)."""
    from mtl_keras import recipes
    from mtl_keras.training import building

    recipe = recipes.get("demo")
    bundle = building.load_data(recipe)
    specs = building.task_specs(recipe, bundle.task_options)
    model = building.build_model(recipe, specs, steps=steps + 5)
    ds = bundle.train.repeat()
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * recipe.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="images per 64x64 measurement")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--train-steps", type=int, default=30, help="0 skips the training rate")
    args = parser.parse_args()
    print(f"{'size':>9} | {'threads':>7} | {'img/s':>7} | {'CPU ms/img':>10}")
    demo_rate = None
    for size, count in (((64, 64), args.images), ((128, 128), max(args.images // 4, 1))):
        for workers in sorted({1, args.workers}):
            rate, cpu_ms = measure(size, workers, count)
            name = f"{size[0]}x{size[1]}"
            print(f"{name:>9} | {workers:>7} | {rate:7.0f} | {cpu_ms:10.2f}")
            if size == (64, 64) and workers == 1:
                demo_rate = rate
    if args.train_steps:
        train = training_rate(args.train_steps)
        print(f"\ndemo model training (64x64, batch 8): {train:.0f} img/s")
        print(f"generation / training rate (64x64, one thread): {demo_rate / train:.1f}x")


if __name__ == "__main__":
    main()
