"""Recipes choose architecture arguments and start soft-sharing networks from single-task runs.

The survey (Vandenhende et al., TPAMI 2022, Sec. 5) starts cross-stitch, sluice and NDDR-CNN
networks from its trained single-task networks; ``Recipe.init_from_single_task`` does that.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest

from mtl_keras import architectures
from mtl_keras.training import baselines, building, run
from mtl_keras.training.recipe import Recipe
from tests.scale.worker import TINY as SCALE
from tests.utils import tiny_specs

#: the scale-out tests' tiny recipe (ResNet-10 of width 8, conv heads, 32 px), with the fixed
#: balancer and one step of 2 images
TINY = {
    **{k: v for k, v in SCALE.items() if k not in ("name", "balancer", "deterministic")},
    "train_examples": 2,
    "val_examples": 2,
    "batch_size": 2,
    "epochs": 1,
}


def test_architecture_kwargs_reach_the_builder():
    recipe = Recipe(
        name="cs",
        architecture="cross_stitch",
        architecture_kwargs={"alpha": 0.8, "beta": 0.05, "stitch_after": ["stage4"]},
        **TINY,
    )
    network = building.build_network(recipe, building.task_specs(recipe))
    units = [layer for layer in network.layers if layer.name.startswith("cross_stitch_")]
    assert [u.name for u in units] == ["cross_stitch_stage4"]
    assert (units[0].alpha, units[0].beta) == (0.8, 0.05)


def test_unknown_architecture_kwargs_name_the_valid_ones():
    recipe = Recipe(
        name="cs", architecture="cross_stitch", architecture_kwargs={"alpah": 1}, **TINY
    )
    with pytest.raises(ValueError, match=r"'cross_stitch' takes no argument\(s\) \['alpah'\].*"):
        building.build_network(recipe, building.task_specs(recipe))
    with pytest.raises(ValueError, match="keyword arguments: .*alpha, beta, stitch_after"):
        architectures.build("cross_stitch", ["semseg"], alpah=1)
    with pytest.raises(ValueError, match=r"may not set \['backbone'\]; they are recipe fields"):
        Recipe(name="cs", architecture_kwargs={"backbone": "resnet50"})


def test_init_from_single_task_needs_a_soft_sharing_architecture():
    with pytest.raises(ValueError, match="'mtan' cannot start .* only cross_stitch, sluice, nddr"):
        Recipe(name="m", architecture="mtan", init_from_single_task="train")
    with pytest.raises(ValueError, match='None \\(from scratch\\), "train" or'):
        Recipe(name="c", architecture="cross_stitch", init_from_single_task="yes")
    with pytest.raises(ValueError, match=r"one checkpoint for each task of \['semseg', 'depth'\]"):
        Recipe(
            name="c",
            tasks=("semseg", "depth"),
            architecture="cross_stitch",
            init_from_single_task={"semseg": "a.h5"},
        )


def weighted_layers(network: keras.Model, column=None) -> dict:
    """``{(column, layer name): weights}``; ``column`` of a nested model's layers: ``column(name)``
    (the task of a stage model ``f"{task}_{stage}"``, or the single-task network's task)."""
    out = {}
    for layer in network.layers:
        nested = isinstance(layer, keras.Model)
        for sub in layer.layers if nested else [layer]:
            if sub.weights:
                key = (column(layer.name) if nested else None, sub.name)
                out[key] = [np.array(w) for w in sub.get_weights()]
    return out


class InitialWeights(keras.callbacks.Callback):
    """The network's weights when training starts (after initialisation and restore)."""

    def on_train_begin(self, logs=None):
        self.layers = weighted_layers(self.model.network, lambda name: name.rsplit("_", 1)[0])


def test_train_runs_single_task_networks_first_and_reuses_them(tmp_path, monkeypatch):
    recipe = Recipe(
        name="cs",
        architecture="cross_stitch",
        init_from_single_task="train",
        run_dir=str(tmp_path),
        **TINY,
    )
    grab = InitialWeights()
    summary = run.train(recipe, verbose=0, export=False, callbacks=[grab])

    singles = {t: baselines.single_task_recipe(recipe, t) for t in recipe.tasks}
    paths = {t: f"{tmp_path}/cs__single_{t}/checkpoints/last.weights.h5" for t in recipe.tasks}
    assert summary["init_from_single_task"] == paths
    with open(tmp_path / "cs" / "results.json") as f:
        assert json.load(f)["init_from_single_task"] == paths
    assert singles["depth"].architecture == "single_task" and singles["depth"].tasks == ("depth",)
    specs = tiny_specs(recipe.tasks)
    for task in recipe.tasks:  # every column and head layer starts as the trained single task
        single = architectures.load_single_task_networks(
            {task: specs[task]},
            {task: paths[task]},
            **{k: TINY[k] for k in ("backbone", "backbone_kwargs", "head", "head_kwargs")},
            image_size=TINY["image_size"],
        )[task]
        layers = weighted_layers(single, lambda _, t=task: t)
        assert len(layers) == 27  # 24 backbone + 3 head layers with weights
        for key, weights in layers.items():
            for a, b in zip(grab.layers[key], weights, strict=True):
                np.testing.assert_array_equal(a, b)

    trained = []  # a second run trains only itself (its training stubbed: it is the first one's)
    monkeypatch.setattr(run, "_train", lambda recipe, *args: trained.append(recipe.name) or {})
    run.train(recipe, verbose=0, export=False)
    assert trained == ["cs"]
    changed = dataclasses.replace(recipe, learning_rate=0.01)
    with pytest.raises(ValueError, match=r"trained with other \['learning_rate'\]"):
        run.train(changed, verbose=0, export=False)
    assert trained == ["cs"]
