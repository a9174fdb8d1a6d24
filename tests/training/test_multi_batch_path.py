"""The multi-batch gradient path: strided mini-batches that every strategy cuts the same way, the
update of the balancer's weights, the logs, and the recipe's data batched by mini-batches."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.training import MultiTaskModel, NonFiniteLossError, building
from mtl_keras.training.gradient_paths import MultiBatchPath
from mtl_keras.training.gradient_paths.multi_batch import strided_merge, strided_split
from mtl_keras.training.objective import ObjectiveTerm
from mtl_keras.training.precision import precision_policy
from mtl_keras.training.recipe import Recipe
from tests.utils import micro_network, tiny_arrays, tiny_specs, two_replicas

TASKS = ("semseg", "depth")


def _model(balancer, **kwargs):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(
        micro_network(TASKS), list(tiny_specs(TASKS).values()), balancer, **kwargs
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def _batch(n, nan_task=None):
    arrays = tiny_arrays(TASKS, n=n, size=16)
    labels = {t: arrays[t].astype(np.float32) if t == nan_task else arrays[t] for t in TASKS}
    if nan_task is not None:
        labels[nan_task][1, 0, 0, 0] = np.nan
    return arrays["image"], labels


def test_strided_chunks_and_their_inverse():
    x = tf.reshape(tf.range(24), [12, 2])
    chunks = strided_split(x, 3)
    for a, chunk in enumerate(chunks):
        np.testing.assert_array_equal(chunk, x.numpy()[a::3])
    np.testing.assert_array_equal(strided_merge(chunks), x)


def test_each_replicas_strided_chunk_is_its_share_of_the_one_device_chunk():
    """The global batch is cut into contiguous replica slices; with the per-replica size a
    multiple of k, the replicas' chunks ``a`` together are the one-device chunk ``a``."""
    strategy, k = two_replicas(), 3
    ds = tf.data.Dataset.from_tensor_slices(tf.range(12)).batch(12)
    batch = next(iter(strategy.experimental_distribute_dataset(ds)))
    for a in range(k):
        local = strategy.experimental_local_results(
            strategy.run(lambda x, a=a: strided_split(x, k)[a], (batch,))
        )
        np.testing.assert_array_equal(np.concatenate(local), np.arange(12)[a::k])


@pytest.mark.parametrize("name", ["sdmgrad", "modo"])
def test_the_path_and_its_refusals(name):
    model = _model(name)
    assert type(model._path) is MultiBatchPath and model.gradient_source == "multi_batch"
    with pytest.raises(ValueError, match="gradient_source='auto' or 'shared'"):
        _model(name, gradient_source="representation")
    with pytest.raises(ValueError, match="multiple of 3 examples .* 3 \\* batch_size"):
        model.train_on_batch(*_batch(4))


def test_one_step_is_the_direction_batchs_step_and_logs_the_mean_over_batches():
    """MoDo with gamma = 0 keeps lambda = 1/T: the shared variables take the mean gradient of the
    last mini-batch (examples 2, 5), the heads its summed task gradients; the logged losses are
    the means over the three mini-batches."""
    model = _model(balancing.get("modo", gamma=0.0))
    images, labels = _batch(6)
    net, lr = model.network, 0.1
    chunk_losses, chunk_grads = [], []
    for a in range(3):
        with tf.GradientTape(persistent=True) as tape:
            outputs = net(images[a::3], training=True)
            losses, _ = model.task_losses(
                {t: tf.constant(v[a::3]) for t, v in labels.items()}, outputs
            )
            per_task = [losses[i] for i in range(len(TASKS))]
        chunk_losses.append(losses.numpy())
        chunk_grads.append([tape.gradient(loss, net.trainable_variables) for loss in per_task])
    shared = {id(v) for v in model.sharing.shared_variables}
    before = [v.numpy() for v in net.trainable_variables]
    logs = model.train_on_batch(images, labels, return_dict=True)
    for j, (v, old) in enumerate(zip(net.trainable_variables, before)):
        g = [chunk_grads[2][i][j] for i in range(2)]
        g = [np.zeros(v.shape) if x is None else x.numpy() for x in g]
        step = (g[0] + g[1]) / (2.0 if id(v) in shared else 1.0)
        np.testing.assert_allclose(v.numpy(), old - lr * step, rtol=1e-4, atol=1e-6, err_msg=v.path)
    mean = np.mean(chunk_losses, axis=0)
    for i, t in enumerate(TASKS):
        np.testing.assert_allclose(logs[f"{t}_loss"], mean[i], rtol=1e-5)
        np.testing.assert_allclose(logs[f"{t}_weight"], 0.5, rtol=1e-6)


def test_two_batch_modo_with_weighted_heads_on_two_replicas_equals_one_device():
    strategy = two_replicas()
    images, labels = _batch(8)

    def trained(scope):
        with scope:
            model = _model(balancing.get("modo", batches=2), head_weighting="weighted")
        model.fit(
            tf.data.Dataset.from_tensors((images, labels)), epochs=2, verbose=0, shuffle=False
        )
        return model

    one, two = trained(tf.distribute.get_strategy().scope()), trained(strategy.scope())
    for a, b in zip(one.network.trainable_variables, two.network.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    np.testing.assert_allclose(one.balancer.task_weights, two.balancer.task_weights, 1e-5, 1e-6)


@pytest.mark.parametrize("name", ["sdmgrad", "modo"])
def test_a_nan_label_stops_with_the_non_finite_loss_error_naming_the_task(name):
    images, labels = _batch(6, nan_task="depth")
    data = tf.data.Dataset.from_tensors((images, labels))
    with pytest.raises(NonFiniteLossError, match=r"\['depth'\]"):
        _model(name).fit(data, epochs=1, verbose=0)


def test_a_recipes_training_batches_hold_the_balancers_mini_batches():
    recipe = Recipe(
        name="multi",
        tasks=TASKS,
        image_size=(16, 16),
        train_examples=12,
        val_examples=4,
        batch_size=2,
        balancer="sdmgrad",
    )
    bundle = building.load_data(recipe)
    assert building.batches_per_step(recipe) == 3
    assert bundle.train.element_spec[0].shape[0] == 6 and bundle.train_split.batch_size == 6
    assert bundle.val.element_spec[0].shape[0] in (2, None)
    # as many updates an epoch as a one-batch method: the epoch reads the data three times
    assert int(bundle.train.cardinality()) == 2
    assert building.steps_per_epoch(recipe, bundle.train) == 6
    mgda = dataclasses.replace(recipe, balancer="mgda")
    plain = building.load_data(mgda)
    assert building.steps_per_epoch(mgda, plain.train) == 6
    two = dataclasses.replace(recipe, balancer="modo", balancer_kwargs={"batches": 2})
    assert building.batches_per_step(two) == 2
    assert building.steps_per_epoch(two, building.load_data(two).train) == 6


def test_only_the_multi_batch_path_takes_several_mini_batches():
    with pytest.raises(ValueError, match="only the multi_batch path takes several"):
        balancing.base.Needs({"shared": "gramian"}, batches=3)
    with pytest.raises(ValueError, match="takes an integer >= 2 mini-batches"):
        balancing.base.Needs({"multi_batch": "cross_gramians"}, batches=1)
    with pytest.raises(ValueError, match="runs on the multi_batch path only"):
        balancing.base.Needs({"multi_batch": "cross_gramians", "shared": "gramian"}, batches=2)
    assert balancing.base.Needs({"loss": "losses"}).batches == 1


class _DepthMean(ObjectiveTerm):
    """A test term outside the balancer: ``0.5 * mean(depth output)``."""

    log_names = ("depth_mean",)

    def bind(self, network, specs, path, balancer):
        self.built = True
        return {"depth": network.output["depth"]}

    def compute(self, x, y, taps, task_loss, step):
        value = tf.reduce_mean(tf.cast(taps["depth"], tf.float32))
        return 0.5 * value, {"depth_mean": value}


def test_a_term_outside_the_balancer_is_added_on_the_direction_batch():
    """With the term minus without it, one SGD step (lr 1) is ``-grad`` of the term on the last
    mini-batch, the only one the three-batch MoDo steps along; its log is the mean over batches."""
    images, labels = _batch(6)

    def step(terms):
        model = _model(balancing.get("modo", gamma=0.0), objective_terms=terms)
        model.optimizer.learning_rate.assign(1.0)
        logs = model.train_on_batch(images, labels, return_dict=True)
        return model, [v.numpy() for v in model.network.trainable_variables], logs

    model, with_term, logs = step([_DepthMean()])
    _, without, _ = step([])
    net = _model("fixed").network  # the same initial weights
    with tf.GradientTape(persistent=True) as tape:
        depth = [net(images[a::3], training=True)["depth"] for a in range(3)]
        term = 0.5 * tf.reduce_mean(depth[2])
    means = [float(tf.reduce_mean(d)) for d in depth]
    np.testing.assert_allclose(logs["depth_mean"], np.mean(means), rtol=1e-5)
    for g, a, b in zip(tape.gradient(term, net.trainable_variables), with_term, without):
        expected = np.zeros_like(a) if g is None else -np.asarray(g)
        np.testing.assert_allclose(a - b, expected, rtol=2e-3, atol=2e-6)


@pytest.mark.parametrize("name", ["sdmgrad", "modo"])
def test_one_mixed_float16_step(name):
    with precision_policy("mixed_float16"):
        model = _model(name)
    before = [v.numpy() for v in model.network.trainable_variables]
    logs = model.train_on_batch(*_batch(6), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
    after = [v.numpy() for v in model.network.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after) if a.ndim == 4)
