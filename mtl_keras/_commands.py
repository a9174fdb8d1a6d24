"""The commands of ``mtl-keras`` (train, evaluate, export, preview, summary, list); the parser,
the exit codes and the error handling are in `mtl_keras.cli`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

from mtl_keras._names import aliases_of, summary


def _recipe(args):
    from mtl_keras import recipes

    return recipes.get(args.recipe).with_overrides(args.set)


def _load_trained(recipe, weights: str | None):
    from mtl_keras.architectures import load_weights_file
    from mtl_keras.training.building import build_model, load_data, task_specs
    from mtl_keras.training.precision import precision_policy

    path = weights or os.path.join(recipe.output_dir, "checkpoints", "last.weights.h5")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no weights at {path}; train first (mtl-keras train --recipe {recipe.name}) "
            "or pass --weights PATH"
        )
    bundle = load_data(recipe)
    specs = task_specs(recipe, bundle.task_options)
    with precision_policy(recipe.precision):  # the layers' dtypes (and optimizer) of training
        # the trained weights replace every pretrained one: those are not loaded first
        model = build_model(recipe, specs, steps=1, backbone_weights=False)
    load_weights_file(model, path)
    return model, bundle, specs


def _print_train_summary(recipe, summary: dict, exporting: bool) -> None:
    """The run's metrics and summary, then where everything went: run folder, TensorBoard
    command, results file, checkpoint and export."""
    folder = recipe.output_dir
    if summary.get("already_finished"):
        print(
            f"{folder} holds a finished run of {recipe.name!r}: it is reported, not trained or "
            "exported again (mtl-keras train --new-run trains a new model in a new run folder)"
        )
    print("\nValidation metrics (model vs trivial baseline):")
    print(summary.pop("table"))
    print(json.dumps(summary, indent=2, sort_keys=True))
    where = {
        "run folder": folder,
        "TensorBoard": f"tensorboard --logdir {folder}  (every run, HParams table: "
        f"tensorboard --logdir {recipe.run_dir})",
        "results": os.path.join(folder, "results.json"),
        "checkpoint": summary.get("checkpoint"),
        "export": summary.get("export"),
    }
    if not where["export"] and not exporting:
        where["export"] = f"none (--no-export; mtl-keras export --recipe {recipe.name} writes one)"
    print()
    for label, value in where.items():
        if value:
            print(f"{label + ':':<13} {value}")


def _check_launcher(args) -> None:
    """Ray's options need --launcher ray, and it needs --workers."""
    if args.launcher == "ray":
        if args.workers is None:
            raise ValueError("--launcher ray needs --workers N, e.g. --workers 2")
        if args.strategy not in (None, "multi_worker"):
            raise ValueError(
                f"--launcher ray trains with strategy multi_worker, not {args.strategy!r}; "
                "drop --strategy"
            )
        return
    given = [
        f"--{k.replace('_', '-')}"
        for k in ("workers", "ray_address", "ray_storage")
        if getattr(args, k) is not None
    ]
    if given:
        raise ValueError(f"{', '.join(given)} need --launcher ray (docs/scale_out.md)")


def cmd_train(args) -> int:
    from mtl_keras.training import run
    from mtl_keras.training.resume import new_run

    _check_launcher(args)
    recipe = _recipe(args)
    scale_out = {k: getattr(args, k) for k in ("strategy", "precision") if getattr(args, k)}
    if scale_out:
        recipe = dataclasses.replace(recipe, **scale_out)
    if args.new_run:
        recipe = new_run(recipe)
    if args.launcher == "ray":
        from mtl_keras.training.ray_launcher import train_on_ray

        summary = train_on_ray(
            recipe,
            workers=args.workers,
            address=args.ray_address,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
            max_failures=args.max_failures,
            storage_path=args.ray_storage,
            verbose=2,
            export=not args.no_export,
        )
        recipe = dataclasses.replace(recipe, strategy="multi_worker")
    else:
        summary = run.train(recipe, verbose=2 if args.quiet else "auto", export=not args.no_export)
    _print_train_summary(recipe, summary, exporting=not args.no_export)
    return 0


def cmd_evaluate(args) -> int:
    from mtl_keras.metrics import delta_mtl, write_results
    from mtl_keras.training.baselines import trivial_baseline
    from mtl_keras.training.building import task_specs
    from mtl_keras.training.reports import (
        evaluate_model,
        format_table,
        primary_metrics,
        read_baselines,
    )

    recipe = _recipe(args)
    if args.baselines:
        recipe = dataclasses.replace(recipe, baselines=args.baselines)
    if args.protocol:
        return _evaluate_protocol(args, recipe)
    if args.max_examples is not None:
        raise ValueError(
            "--max-examples needs --protocol (evaluate scores the recipe's val_examples; "
            "--set val_examples=N changes them)"
        )
    # before the weights load: a baselines file without a task's metric fails first
    base = read_baselines(recipe, task_specs(recipe))
    model, bundle, specs = _load_trained(recipe, args.weights)
    results = evaluate_model(model, bundle.val)
    trivial = trivial_baseline(specs, bundle.train_labels, bundle.val)
    extra = {"trivial_baseline": trivial}
    if base is not None:
        extra["delta_mtl"] = delta_mtl(results, base, primary_metrics(specs))
    out = args.out or os.path.join(recipe.output_dir, "eval.json")
    write_results(out, recipe.name, results, **extra)
    print(format_table(results, trivial, specs, base))
    print(json.dumps({"metrics": results, **extra, "written": out}, indent=2, sort_keys=True))
    return 0


def _protocol_dataset(recipe, protocol: str) -> str:
    """The canonical name of the recipe's dataset, which must have original-resolution
    examples: the synthetic scenes or a dataset of `mtl_keras.data.real.load_examples`."""
    from mtl_keras import data
    from mtl_keras._names import canonical
    from mtl_keras.data.real import REAL_DATASETS

    name = canonical("dataset", recipe.dataset, data.DATASETS, data.ALIASES)
    if name != "synthetic" and name not in REAL_DATASETS:
        have = ", ".join(["synthetic", *REAL_DATASETS])
        raise ValueError(
            f"--protocol {protocol} scores at the labels' original resolution, but dataset "
            f"{recipe.dataset!r} has no original-resolution labels (its loader gives batches "
            f"at the recipe's image_size only); use a dataset that has them ({have}: "
            "mtl_keras.data.real.load_examples reads the published ones), or evaluate "
            "without --protocol"
        )
    return name


def _original_examples(recipe, dataset: str, tasks, count: int | None):
    """The validation examples ``{"id", "image", task: label}`` at their original resolution,
    unbatched: those ``evaluate`` scores at the recipe's ``image_size`` (the first
    ``val_examples``; ``count`` of them when given). The synthetic scenes are rendered at
    ``image_size`` (they have no other resolution), as `mtl_keras.data.load_synthetic` renders
    its validation split."""
    tasks = tuple(tasks)
    if dataset == "synthetic":
        from mtl_keras.data import SyntheticScenes

        scenes = SyntheticScenes(image_size=tuple(recipe.image_size), seed=recipe.data_seed)
        arrays = scenes.arrays("val", count, tasks)
        return ({"id": f"val/{i}", **{k: v[i] for k, v in arrays.items()}} for i in range(count))
    from mtl_keras.data.real import load_examples

    return load_examples(
        dataset, "val", tasks=tasks, data_dir=recipe.data_dir, manual_dir=recipe.manual_dir
    )


def _evaluate_protocol(args, recipe) -> int:
    """``evaluate --protocol NAME``: the trained network scored at the labels' original
    resolution under the protocol (`mtl_keras.evaluation.protocol.evaluate_to_file`), with the
    trivial baseline under the same protocol; writes ``protocol.json``."""
    from mtl_keras.evaluation import protocol
    from mtl_keras.training.building import task_specs
    from mtl_keras.training.reports import format_table, read_baselines

    dataset = _protocol_dataset(recipe, args.protocol)
    resolved = protocol.get_protocol(args.protocol, dataset)
    # before the weights load: a baselines file without a task's metric fails first
    base = read_baselines(recipe, task_specs(recipe), resolved)
    model, bundle, specs = _load_trained(recipe, args.weights)
    limits = [n for n in (recipe.val_examples, args.max_examples) if n is not None]
    count = min(limits) if limits else None
    out = args.out or os.path.join(recipe.output_dir, "protocol.json")
    result = protocol.evaluate_to_file(
        model.network,
        _original_examples(recipe, dataset, specs, count),
        specs,
        out,
        name=recipe.name,
        image_size=recipe.image_size,
        baselines=base,
        max_examples=count,
        trivial_labels=bundle.train_labels,
        protocol=args.protocol,
        dataset=dataset,
    )
    images = result["counts"]["images"]
    print(
        f"Protocol {args.protocol!r} on {dataset} ({images} validation images at their original "
        "resolution), model vs trivial baseline under the protocol:"
    )
    print(format_table(result["metrics"], result["trivial_baseline"], specs, base))
    print(json.dumps({**result, "written": out}, indent=2, sort_keys=True))
    return 0


def cmd_export(args) -> int:
    from mtl_keras.export import export_saved_model

    recipe = _recipe(args)
    model, _, specs = _load_trained(recipe, args.weights)
    path = export_saved_model(
        model.network,
        specs,
        args.export_dir or recipe.export_dir,
        recipe.name,
        image_size=recipe.image_size,
        version=args.version,
    )
    print(json.dumps({"export": path}))
    return 0


def cmd_preview(args) -> int:
    from mtl_keras.data import SyntheticScenes, synthetic_task_options
    from mtl_keras.data.preview import preview_grid
    from mtl_keras.tasks import resolve

    scenes = SyntheticScenes(image_size=tuple(args.image_size), seed=args.seed)
    arrays = scenes.arrays(args.split, args.n)
    specs = resolve([k for k in arrays if k != "image"], synthetic_task_options())
    path = preview_grid(arrays, args.out, colorize={t: s.colorize for t, s in specs.items()})
    print(json.dumps({"preview": path}))
    return 0


def cmd_summary(args) -> int:
    import dataclasses

    from mtl_keras import backbones
    from mtl_keras.data import synthetic_task_options
    from mtl_keras.metrics import count_flops, count_params
    from mtl_keras.training.building import auxiliary_specs, build_network, task_specs
    from mtl_keras.training.recipe import Recipe

    h, w = args.image_size
    if args.recipe:
        recipe = _recipe(args)
        if args.image_size_given:
            recipe = dataclasses.replace(recipe, image_size=(h, w))
        h, w = recipe.image_size
        model = build_network(
            recipe,
            task_specs(recipe, synthetic_task_options()),
            auxiliary_specs(recipe, synthetic_task_options()),
            backbone_weights=False,  # counts only
        )
    elif args.arch:
        tasks = tuple(t for t in (args.tasks or "semseg,depth").split(",") if t)
        recipe = Recipe(
            name="summary",
            tasks=tasks,
            image_size=(h, w),
            architecture=args.arch,
            backbone=args.backbone or "resnet50",
        ).with_overrides(args.set)
        model = build_network(
            recipe,
            task_specs(recipe, synthetic_task_options()),
            auxiliary_specs(recipe, synthetic_task_options()),
            backbone_weights=False,  # counts only
        )
    else:
        model = backbones.get(args.backbone)
    info = {"model": model.name, "image_size": [h, w], **count_params(model)}
    info["flops"] = count_flops(model, (h, w, 3))
    print(json.dumps(info, indent=2))
    return 0


LIST_KINDS = ("recipes", "architectures", "backbones", "heads", "balancers", "tasks", "datasets")


def _registry(kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """``({name: one-line description}, {alias: name})`` of one kind, from its registry."""
    if kind == "recipes":
        from mtl_keras import recipes

        return {name: recipes.describe(name) for name in recipes.available()}, {}
    from mtl_keras import architectures, backbones, balancing, data, heads, tasks

    registry, aliases = {
        "architectures": (architectures.ARCHITECTURES, architectures.ALIASES),
        "backbones": (backbones.BACKBONES, backbones.ALIASES),
        "heads": (heads.HEADS, heads.ALIASES),
        "balancers": (balancing.BALANCERS, balancing.ALIASES),
        "tasks": (tasks.TASKS, {}),
        "datasets": (data.DATASETS, data.ALIASES),
    }[kind]
    # a functools.partial (the ResNet depths) is described by the function it wraps
    docs = {name: getattr(obj, "func", obj).__doc__ for name, obj in registry.items()}
    return {name: summary(doc).split(". ")[0].rstrip(".") for name, doc in docs.items()}, aliases


def cmd_list(args) -> int:
    # a terminal gets one line per name; a pipe or a file gets the whole descriptions
    width = max(shutil.get_terminal_size().columns, 60) if sys.stdout.isatty() else None
    for i, kind in enumerate([args.kind] if args.kind else LIST_KINDS):
        descriptions, aliases = _registry(kind)
        pad = max(map(len, descriptions))
        print(("\n" if i else "") + f"{kind}:")
        for name, text in descriptions.items():
            also = aliases_of(name, aliases)
            text += f" (also: {', '.join(also)})" if also else ""
            line = f"  {name:<{pad}}  {text}"
            print(line if width is None or len(line) <= width else line[: width - 3] + "...")
    if not args.kind:
        print("\nNames match ignoring case, '-' and '_' (MTI-Net = mti_net = mtinet).")
    return 0
