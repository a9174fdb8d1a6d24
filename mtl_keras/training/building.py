"""Building a run from its Recipe: seeds, data, TaskSpecs, network, optimizer and trainer.

Everything here is a function of the recipe (and, for the specs, of the dataset's task options):
two calls with the same recipe build the same objects, which is what makes a run reproducible and
a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import inspect
import random

import keras
import numpy as np
import tensorflow as tf

from mtl_keras import architectures, backbones, balancing, data
from mtl_keras.architectures.astmt import task_features
from mtl_keras.backbones.weights import load_resnet_weights
from mtl_keras.tasks import TaskSpec, resolve
from mtl_keras.training import distribute, optimizers
from mtl_keras.training.adversarial import AdversarialMultiTaskModel
from mtl_keras.training.model import MultiTaskModel
from mtl_keras.training.recipe import Recipe


def set_seed(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def resolve_jit(value) -> bool:
    """``"auto"``: XLA only where a GPU exists (it is ~3x slower on these CPUs)."""
    if value == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(value)


def load_data(recipe: Recipe) -> data.DataBundle:
    """The recipe's dataset; real datasets also get their folders and augmentation switch.

    A training step takes :func:`batches_per_step` mini-batches of ``recipe.batch_size``, so the
    training batches hold that many times ``batch_size`` examples (validation batches do not).
    """
    kwargs = {}
    if recipe.dataset != "synthetic":
        kwargs = {
            "data_dir": recipe.data_dir,
            "manual_dir": recipe.manual_dir,
            "augment": recipe.augment,
        }
    bundle = data.load(
        recipe.dataset,
        (*recipe.tasks, *recipe.auxiliary_tasks),
        image_size=recipe.image_size,
        train_examples=recipe.train_examples,
        val_examples=recipe.val_examples,
        batch_size=recipe.batch_size,
        seed=recipe.data_seed,
        shuffle_seed=recipe.seed,
        **kwargs,
    )
    return batched_per_step(bundle, batches_per_step(recipe), recipe.batch_size)


def batches_per_step(recipe: Recipe) -> int:
    """The mini-batches one training step consumes: the balancer's ``needs.batches`` (3 for
    SDMGrad, 2 or 3 for MoDo, else 1)."""
    return balancing.get(recipe.balancer, **balancer_kwargs(recipe)).needs.batches


def batched_per_step(bundle: data.DataBundle, batches: int, batch_size: int) -> data.DataBundle:
    """``bundle`` whose training batches hold ``batches`` mini-batches of ``batch_size``: the
    same example stream, batched by ``batches * batch_size`` (in the shardable split too, so
    workers that decode shares cut the same global batches)."""
    if batches == 1:
        return bundle
    split = bundle.train_split
    if split is None:
        train = bundle.train.rebatch(batches * batch_size, drop_remainder=True)
        return dataclasses.replace(bundle, train=train)
    split = dataclasses.replace(split, batch_size=batches * batch_size)
    return dataclasses.replace(bundle, train=split.pipeline(), train_split=split)


def task_specs(recipe: Recipe, bundle_options: dict | None = None) -> dict[str, TaskSpec]:
    options = {**(bundle_options or {}), **recipe.task_options}
    return resolve(recipe.tasks, options)


def auxiliary_specs(recipe: Recipe, bundle_options: dict | None = None) -> dict[str, TaskSpec]:
    """TaskSpecs of the recipe's auxiliary (deep-supervision only) tasks."""
    if not recipe.auxiliary_tasks:
        return {}
    options = {**(bundle_options or {}), **recipe.task_options}
    return resolve(recipe.auxiliary_tasks, options)


def pretrained_backbone(recipe: Recipe) -> keras.Model:
    """The recipe's ResNet (``backbone``, ``backbone_kwargs``) with its ``backbone_weights``.

    Raises:
        ValueError: the weights are missing or do not fit the ResNet (another depth or width);
            the message names the recipe, the weights and the mismatched keys.
    """
    backbone = backbones.get(recipe.backbone, **recipe.backbone_kwargs)
    try:
        load_resnet_weights(backbone, recipe.backbone_weights)
    except ValueError as e:
        raise ValueError(
            f"recipe {recipe.name!r}: backbone_weights={recipe.backbone_weights!r} do not fit "
            f"backbone {recipe.backbone!r} with backbone_kwargs {recipe.backbone_kwargs}; set "
            f"backbone and backbone_kwargs to the ResNet the weights belong to. {e}"
        ) from e
    return backbone


def build_network(
    recipe: Recipe,
    specs: dict[str, TaskSpec],
    auxiliary: dict[str, TaskSpec] | None = None,
    *,
    backbone_weights: bool = True,
) -> keras.Model:
    """The recipe's network (architecture, backbone, heads) for ``specs``.

    With ``recipe.backbone_weights`` (and ``backbone_weights``, default true) the ResNet is built
    once, its pretrained weights are loaded into it (:func:`pretrained_backbone`), and the
    architecture is given that built ResNet: one that shares an encoder (hard sharing, MTAN,
    ASTMT, the decoder-focused networks) uses it as it is; one with several copies (each task's
    column of cross-stitch, sluice and NDDR networks, the tree nodes of branched networks)
    clones it with its weights (``architectures._blocks.backbone_copies``), so every copy starts
    from the same pretrained weights, as the survey starts every task's column from ImageNet
    (Vandenhende et al., TPAMI 2022, Sec. 5). The network's layers and variables are the same
    as without weights, so checkpoints fit both.

    Order with the other initialisations of a run (:func:`mtl_keras.training.run.train`):

    1. the pretrained weights, here, while the network is built;
    2. ``init_from_single_task``, after :func:`build_model`: the single-task checkpoints
       replace every column and head. They are the more specific start, and a single-task
       run that ``init_from_single_task="train"`` trains inherits ``backbone_weights``
       (``baselines.single_task_recipe``), so each column still starts from the pretrained
       weights, through its trained single-task network, as in the survey;
    3. a resumed run's state, last (``TrainingBackup.restore`` loads every variable), so a
       resumed run continues from its own weights. ``backbone_weights`` is part of the run's
       fingerprint (``resume.fingerprint``): a run is not resumed with other weights.

    ``backbone_weights=False`` builds the ResNet from scratch, for callers that load trained
    weights into the network at once (evaluate, export).
    """
    backbone, backbone_kwargs = recipe.backbone, recipe.backbone_kwargs
    if backbone_weights and recipe.backbone_weights is not None:
        backbone, backbone_kwargs = pretrained_backbone(recipe), {}
    extra = {"auxiliary_tasks": list(auxiliary.values())} if auxiliary else {}
    return architectures.build(
        recipe.architecture,
        list(specs.values()),
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        head=recipe.head,
        head_kwargs=recipe.head_kwargs,
        image_size=recipe.image_size,
        **recipe.architecture_kwargs,
        **extra,
    )


def make_optimizer(recipe: Recipe, total_steps: int) -> keras.optimizers.Optimizer:
    lr = recipe.learning_rate
    if recipe.schedule == "poly":
        lr = keras.optimizers.schedules.PolynomialDecay(
            recipe.learning_rate,
            max(total_steps, 1),
            end_learning_rate=0.0,
            power=recipe.poly_power,
        )
    elif recipe.schedule != "constant":
        raise ValueError(f"unknown schedule {recipe.schedule!r}; valid: poly, constant")
    common = {"weight_decay": recipe.weight_decay or None, "global_clipnorm": recipe.clip_norm}
    if recipe.optimizer == "adam":  # keras.optimizers.Adam's updates with a smaller graph
        return optimizers.Adam(lr, **common)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, **common)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; valid: adam, sgd")


def balancer_kwargs(recipe: Recipe) -> dict:
    """The recipe's balancer arguments, with ``seed=recipe.seed`` for stochastic balancers.

    Stochastic balancers (RLW, PCGrad, GradDrop, GradVac) draw from ``(seed, step)``; without an
    explicit seed they would pick a random one, so the recipe's seed is passed unless the
    recipe's ``balancer_kwargs`` set one.
    """
    kwargs = dict(recipe.balancer_kwargs)
    balancer_type = type(balancing.get(recipe.balancer, **kwargs))
    if "seed" in inspect.signature(balancer_type).parameters and "seed" not in kwargs:
        kwargs["seed"] = recipe.seed
    return kwargs


def build_model(
    recipe: Recipe,
    specs: dict[str, TaskSpec],
    steps: int,
    auxiliary: dict[str, TaskSpec] | None = None,
    *,
    backbone_weights: bool = True,
) -> MultiTaskModel:
    """Network, trainer and built optimizer (call inside the strategy's scope and the recipe's
    precision policy, see :func:`mtl_keras.training.run.train`). ``auxiliary``: the specs of the
    recipe's auxiliary tasks (:func:`auxiliary_specs`; default: resolved without dataset
    options). The network starts from the recipe's ``backbone_weights`` unless
    ``backbone_weights`` is false (:func:`build_network`)."""
    if auxiliary is None:
        auxiliary = auxiliary_specs(recipe)
    network = build_network(recipe, specs, auxiliary, backbone_weights=backbone_weights)
    trainer, adversarial = MultiTaskModel, {}
    if recipe.adversarial_weight > 0:  # ASTMT's discriminator, its reversal ramped over the run
        if not task_features(network):
            raise ValueError(
                f"recipe {recipe.name!r}: adversarial_weight={recipe.adversarial_weight} needs "
                f"per-task TaskFeatures markers, which architecture {recipe.architecture!r} does "
                "not have; use architecture='astmt' or adversarial_weight=0"
            )
        trainer = AdversarialMultiTaskModel
        adversarial = {
            "adversarial_weight": recipe.adversarial_weight,
            "reversal_steps": max(int(steps), 1),
        }
    model = trainer(
        network,
        list(specs.values()),
        recipe.balancer,
        balancer_kwargs=balancer_kwargs(recipe),
        gradient_source=recipe.gradient_source,
        auxiliary_tasks=list(auxiliary.values()),
        auxiliary_weights=recipe.auxiliary_weights,
        gradient_statistics=recipe.gradient_statistics,
        **adversarial,
    )
    model.compile(
        optimizer=make_optimizer(recipe, steps), jit_compile=resolve_jit(recipe.jit_compile)
    )
    distribute.build_optimizer_in_scope(model)
    return model


def steps_per_epoch(recipe: Recipe, train_ds: tf.data.Dataset) -> int:
    """The recipe's ``steps_per_epoch``, else one step per mini-batch of ``batch_size`` in one
    pass of the data, whatever the balancer.

    ``train_ds`` is :func:`load_data`'s training data: one pass of batches of ``k x batch_size``
    examples, ``k`` = :func:`batches_per_step`. A method that takes ``k`` mini-batches a step
    still makes as many updates an epoch as equal weights does (``k`` times the pass's batches:
    its epoch reads the data ``k`` times from the endless training stream), as in LibMTL's trainer
    (``len(train_loader)`` iterations, each drawing three batches for MoDo and SDMGrad) and the
    Auto-Lambda authors' code (``len(train_loader)`` iterations, the held-out batch from a second
    loader). Counting the pass's ``k x batch_size`` batches instead would give such a method
    ``1/k`` of the updates in a study of fixed epochs.
    """
    if recipe.steps_per_epoch:
        return int(recipe.steps_per_epoch)
    steps = int(train_ds.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"recipe {recipe.name!r}: the training data repeats forever; set steps_per_epoch"
        )
    if steps < 0:  # unknown: count one pass
        steps = int(train_ds.reduce(0, lambda n, _: n + 1))
    if steps == 0:
        raise ValueError(
            f"recipe {recipe.name!r}: the training data has no full batch of "
            f"{batches_per_step(recipe)} x batch_size={recipe.batch_size} examples (mini-batches "
            "per step x batch_size); lower batch_size or add examples"
        )
    return steps * batches_per_step(recipe)
