"""The trainer's parts: one gradient path chosen once from the balancer's needs, objective terms
added outside the balancer, non-finite inputs stopped before any balancer runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training import LabelError, MultiTaskModel, NonFiniteLossError
from mtl_keras.training.gradient_paths import LossPath, RepresentationPath, SharedPath
from mtl_keras.training.objective import ObjectiveTerm
from tests.utils import micro_network, tiny_arrays, tiny_specs

TASKS = ("semseg", "depth")


def _specs():
    return list(tiny_specs(TASKS).values())


def _data(nan_task=None, n=4, batch=2):
    arrays = tiny_arrays(TASKS, n=n, size=16)
    labels = {t: arrays[t].copy() for t in TASKS}
    if nan_task is not None:
        labels[nan_task] = labels[nan_task].astype(np.float32)
        labels[nan_task][0, 0, 0, 0] = np.nan
    return tf.data.Dataset.from_tensor_slices((arrays["image"], labels)).batch(batch)


def _model(balancer="fixed", **kwargs):
    model = MultiTaskModel(micro_network(TASKS), _specs(), balancer=balancer, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=False, jit_compile=False)
    return model


@pytest.mark.parametrize(
    "balancer, source, path",
    [
        ("uncertainty", "auto", LossPath),
        ("mgda", "shared", SharedPath),
        ("mgda", "representation", RepresentationPath),
        ("graddrop", "auto", RepresentationPath),
        ("pcgrad", "auto", SharedPath),
    ],
)
def test_the_path_is_chosen_once_from_the_balancers_needs(balancer, source, path):
    model = MultiTaskModel(
        micro_network(TASKS), _specs(), balancer=balancer, gradient_source=source
    )
    assert type(model._path) is path
    assert model._path.input == model.balancer.needs.paths.get(path.name)


def _paths(name):
    """Every gradient path a registered balancer runs on (the loss path for loss-level ones)."""
    paths = [p for p in balancing.get(name).needs.paths if p in ("shared", "representation")]
    return [(name, p) for p in paths] or [(name, "auto")]


@pytest.mark.parametrize(
    "name, source", [case for name in balancing.available() for case in _paths(name)]
)
def test_non_finite_losses_stop_before_the_balancer_and_name_the_task(name, source):
    """For every balancer on every path: a NaN label gives the non-finite-loss stop that names
    the task, not a solver's failure; ``fit`` stops without any callback given. (Eager: the
    property is the same traced, and tracing every balancer would cost minutes.)"""
    batches = getattr(balancing.get(name).needs, "batches", 1)
    model = MultiTaskModel(micro_network(TASKS), _specs(), balancer=name, gradient_source=source)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    data = _data(nan_task="depth", n=4 * batches, batch=2 * batches)
    with pytest.raises(NonFiniteLossError, match=r"\['depth'\]"):
        model.fit(data, epochs=1, verbose=0)


class _OutputMean(ObjectiveTerm):
    """A test term: ``weight * mean(depth output)``, logged as ``depth_mean``."""

    log_names = ("depth_mean",)

    def __init__(self, weight, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def bind(self, network, specs, path, balancer):
        self.built = True
        return {"depth_logits": network.output["depth"]}

    def compute(self, x, y, taps, task_loss, step):
        value = tf.reduce_mean(tf.cast(taps["depth_logits"], tf.float32))
        return self.weight * value, {"depth_mean": value}


@pytest.mark.parametrize("balancer", ["fixed", "mgda"])
def test_an_objective_term_is_added_outside_the_balancer(balancer):
    """The term's gradient is added unweighted to the balanced update, and it is logged: one step
    with the term minus one without equals ``-lr * weight * d mean(depth) / d variables``."""
    x, y = next(iter(_data(n=2)))

    def step(weight):
        keras.utils.set_random_seed(0)
        terms = [_OutputMean(weight)] if weight else []
        model = MultiTaskModel(
            micro_network(TASKS), _specs(), balancer=balancer, objective_terms=terms
        )
        model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
        before = [v.numpy() for v in model.network.trainable_variables]
        logs = model.train_on_batch(x, y, return_dict=True)
        after = [v.numpy() for v in model.network.trainable_variables]
        return model, before, after, logs

    model, before, with_term, logs = step(0.5)
    _, _, without, _ = step(0.0)
    assert "depth_mean" in logs and np.isfinite(logs["depth_mean"])
    variables = model.network.trainable_variables
    for v, b in zip(variables, before, strict=True):
        v.assign(b)
    with tf.GradientTape() as tape:
        term = 0.5 * tf.reduce_mean(model.network(x, training=True)["depth"])
    grads = tape.gradient(term, variables)
    for g, a, b in zip(grads, with_term, without, strict=True):
        expected = np.zeros_like(a) if g is None else -np.asarray(g)
        np.testing.assert_allclose(a - b, expected, rtol=2e-3, atol=2e-6)


def test_objective_terms_refuse_the_representation_path():
    with pytest.raises(ValueError, match="objective terms that read the network's tensors"):
        MultiTaskModel(
            micro_network(TASKS),
            _specs(),
            balancer="mgda",
            gradient_source="representation",
            objective_terms=[_OutputMean(1.0)],
        )


def test_empty_batches_are_counted_and_foreign_class_ids_refused():
    """A batch whose depth labels are all invalid gives depth loss 0 and is counted in
    ``depth_empty_batches``; a semseg class id the task does not have stops the step."""
    arrays = tiny_arrays(TASKS, n=4, size=16)
    labels = {t: arrays[t].copy() for t in TASKS}
    labels["depth"][:2] = 0.0  # the first batch of two has no valid depth
    data = tf.data.Dataset.from_tensor_slices((arrays["image"], labels)).batch(2)
    model = _model()
    logs = model.fit(data, epochs=1, verbose=0).history
    assert logs["depth_empty_batches"] == [1.0] and logs["semseg_empty_batches"] == [0.0]
    assert model.evaluate(data, return_dict=True, verbose=0)["depth_empty_batches"] == 1.0
    labels["semseg"][0, 0, 0, 0] = model.tasks["semseg"].num_classes  # one class too many
    bad = tf.data.Dataset.from_tensor_slices((arrays["image"], labels)).batch(2)
    with pytest.raises(
        LabelError, match=r"^task .semseg.: a label batch holds class ids outside 0..4"
    ):
        model.fit(bad, epochs=1, verbose=0)
