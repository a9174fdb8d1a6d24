"""GPU check: training images/s of two models with and without XLA and mixed precision.

Usage: ``benchmarks/gpu_check.sh [--quick]`` (or ``python benchmarks/gpu_check.py``).

For each model, four settings are trained with ``model.fit`` on one in-memory batch repeated
(the input pipeline is not measured): float32, float32 + XLA (``jit_compile=True``), mixed
precision, mixed precision + XLA. Each setting first runs ``--warmup`` steps (tracing, XLA
compilation, cuDNN autotuning; reported as "warm-up s"), then ``--steps`` timed steps. The
table gives images per second and milliseconds per step, then each setting's speed-up over
float32 without XLA. Models:

* ``demo``: the demo recipe (ResNet-18 width 16, HRNet head, six tasks, 64x64, batch 8);
* ``large``: ResNet-50 hard sharing with HRNet heads, semseg/depth/normals, 256x256, batch 16;
* ``tiny`` (``--quick``): ResNet-10 width 4, conv heads, two tasks, 16x16, batch 2, a couple of
  steps: checks the script's logic in seconds on a CPU.

Mixed precision is ``mixed_float16`` where a GPU is visible and ``mixed_bfloat16`` otherwise
(``--mixed`` overrides). Without a GPU, mixed precision + XLA is skipped: XLA:CPU rejects the
16-bit gradient of bilinear resizing ("mixed precision is disallowed", TF 2.21, plain Keras
models too). A setting that fails prints its error and the script exits with 1; settings that
would start after ``--budget`` seconds are skipped. The last line, ``RESULT {...}``, repeats
everything as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mtl_keras.data import SyntheticScenes, synthetic_task_options  # noqa: E402
from mtl_keras.training import building  # noqa: E402
from mtl_keras.training.precision import precision_policy  # noqa: E402
from mtl_keras.training.recipe import Recipe  # noqa: E402


def models(quick: bool) -> dict[str, Recipe]:
    if quick:
        return {
            "tiny": Recipe(
                name="tiny",
                tasks=("semseg", "depth"),
                image_size=(16, 16),
                backbone="resnet10",
                backbone_kwargs={"width": 4, "output_stride": 8},
                head="conv",
                head_kwargs={"filters": 4, "num_convs": 1},
                batch_size=2,
            )
        }
    from mtl_keras import recipes

    demo = recipes.get("demo")
    large = dataclasses.replace(
        demo,
        name="large",
        tasks=("semseg", "depth", "normals"),
        image_size=(256, 256),
        backbone="resnet50",
        backbone_kwargs={"output_stride": 16},
        batch_size=16,
    )
    return {"demo": demo, "large": large}


def one_batch(recipe: Recipe) -> tuple[np.ndarray, dict]:
    arrays = SyntheticScenes(image_size=recipe.image_size, seed=0).arrays(
        "train", recipe.batch_size, tasks=recipe.tasks
    )
    return arrays["image"], {t: arrays[t] for t in recipe.tasks}


def measure(recipe: Recipe, precision: str, xla: bool, steps: int, warmup: int) -> dict:
    """Warm-up seconds and timed images/s of one setting."""
    recipe = dataclasses.replace(recipe, precision=precision, jit_compile=xla)
    images, labels = one_batch(recipe)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    with precision_policy(precision):
        keras.utils.set_random_seed(0)
        specs = building.task_specs(recipe, synthetic_task_options())
        model = building.build_model(recipe, specs, steps + warmup)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    history = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    elapsed = time.perf_counter() - start
    loss = float(np.mean(history.history["loss"][-1]))
    if not np.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {loss}")
    return {
        "images_per_s": steps * recipe.batch_size / elapsed,
        "ms_per_step": 1e3 * elapsed / steps,
        "warmup_s": warm,
        "loss": loss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few steps (CPU check)")
    parser.add_argument("--steps", type=int, help="timed steps per setting (default 50, quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5, quick 1)")
    parser.add_argument("--mixed", help="mixed policy (default: float16 on GPU, else bfloat16)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds; later settings skip")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 50)
    warmup = args.warmup or (1 if args.quick else 5)
    gpus = tf.config.list_physical_devices("GPU")
    mixed = args.mixed or ("mixed_float16" if gpus else "mixed_bfloat16")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    print(
        f"gpu_check: {', '.join(names) or 'no GPU (CPU only)'}; tensorflow {tf.__version__}, "
        f"keras {keras.__version__}; {steps} timed steps after {warmup} warm-up"
    )
    settings = [("float32", False), ("float32", True), (mixed, False), (mixed, True)]
    header = f"{'model':<6} {'setting':<20} {'img/s':>9} {'ms/step':>9} {'warm-up s':>9}"
    print(header)
    start, results, failed = time.perf_counter(), {}, False
    for model_name, recipe in models(args.quick).items():
        for precision, xla in settings:
            label = precision + ("+xla" if xla else "")
            key = f"{model_name}/{label}"
            skip = None
            if time.perf_counter() - start > args.budget:
                skip = f"over the {args.budget:g} s budget"
            elif xla and precision != "float32" and not gpus:
                skip = "XLA:CPU rejects 16-bit resize gradients"
            if skip:
                results[key] = {"skipped": skip}
                print(f"{model_name:<6} {label:<20} skipped ({skip})")
                continue
            try:
                r = measure(recipe, precision, xla, steps, warmup)
            except Exception as err:  # report and go on: a device check should say everything
                failed = True
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                results[key] = {"error": f"{type(err).__name__}: {first}"}
                print(f"{model_name:<6} {label:<20} FAILED {type(err).__name__}: {first}")
                continue
            results[key] = r
            print(
                f"{model_name:<6} {label:<20} {r['images_per_s']:9.1f} {r['ms_per_step']:9.1f} "
                f"{r['warmup_s']:9.1f}",
                flush=True,
            )
        base = results.get(f"{model_name}/float32", {}).get("images_per_s")
        ratios = {
            k.split("/", 1)[1]: v["images_per_s"] / base
            for k, v in results.items()
            if base and k.startswith(f"{model_name}/") and "images_per_s" in v
        }
        if ratios:
            text = ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items() if k != "float32")
            print(f"ratios {model_name} (over float32 without XLA): {text}")
    print("RESULT " + json.dumps({"device": names or ["cpu"], "results": results}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
