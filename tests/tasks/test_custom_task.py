"""A task defined outside the package goes through training, augmentation, evaluation, export and
previews from its TaskSpec alone (nothing in those modules knows its name)."""

from __future__ import annotations

import dataclasses
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtl_keras import tasks
from mtl_keras.architectures import build_hard_sharing
from mtl_keras.data import augment as A
from mtl_keras.data.preview import preview_grid
from mtl_keras.tasks import LabelGeometry, TaskSpec
from mtl_keras.tasks.colors import colorize_map
from mtl_keras.training import MultiTaskModel

SIZE = 32


class EndPointError(keras.metrics.Metric):
    """Mean end-point error ``|pred - label|_2`` over all pixels of the set."""

    def __init__(self, name="flow_epe", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        diff = tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)
        error = tf.norm(diff, axis=-1)
        self.total.assign_add(tf.reduce_sum(error))
        self.count.assign_add(tf.cast(tf.size(error), tf.float32))

    def result(self):
        return {"epe": tf.math.divide_no_nan(self.total, self.count)}


def flow(max_flow: float = 4.0) -> TaskSpec:
    """Optical flow in pixels (x right, y down): a 2-vector per pixel, L1 loss, end-point error.

    A flip negates x and a zoom by s multiplies the flow by s, declared by its LabelGeometry;
    interpolation, padding and colours are the defaults of a continuous task.
    """

    def loss(label, raw, *, count_mean=lambda c: c):
        error = tf.abs(tf.cast(raw, tf.float32) - tf.cast(label, tf.float32))
        return tf.math.divide_no_nan(
            tf.reduce_sum(error), count_mean(tf.cast(tf.size(error), tf.float32))
        )

    def activate(raw):
        return tf.clip_by_value(tf.cast(raw, tf.float32), -max_flow, max_flow)

    return TaskSpec(
        name="flow",
        channels=2,
        label_channels=2,
        label_dtype="float32",
        loss=loss,
        metrics=lambda: [EndPointError()],
        higher_is_better={"epe": False},
        primary_metric="epe",
        activate=activate,
        serve=lambda raw: {"flow": activate(raw)},
        baseline=lambda labels: np.asarray(labels, np.float32).reshape(-1, 2).mean(axis=0),
        geometry=LabelGeometry(vector=True, scale_power=1.0),
    )


@pytest.fixture
def flow_task():
    """The flow task registered as a user would; unregistered afterwards."""
    tasks.register("flow", flow)
    try:
        yield tasks.get("flow", max_flow=3.0)
    finally:
        tasks.TASKS.pop("flow", None)


def _scenes(n: int, seed: int) -> dict[str, np.ndarray]:
    """Images whose stripes drift with a per-image flow, the flow field and a depth map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    images, flows, depths = [], [], []
    for _ in range(n):
        u, v = rng.uniform(-1.5, 1.5, 2).astype(np.float32)
        field = np.stack([u + xx, v - yy], axis=-1)
        stripes = 0.5 + 0.5 * np.sin(8 * (u * xx + v * yy) + rng.uniform(0, 6))
        image = np.stack([stripes, xx, 1 - yy], axis=-1) * 255
        images.append(image.astype(np.uint8))
        flows.append(field)
        depths.append((1.0 + yy + 0.5 * np.abs(u))[..., None])
    return {
        "image": np.stack(images),
        "flow": np.stack(flows).astype(np.float32),
        "depth": np.stack(depths).astype(np.float32),
    }


def test_custom_flow_task_end_to_end(flow_task, tmp_path):
    # configs: the registry rebuilds it, options included (what a saved model stores)
    config = flow_task.get_config()
    assert config == {"name": "flow", "options": {"max_flow": 3.0}}
    assert tasks.from_config(config).get_config() == config
    assert flow_task.label_geometry == LabelGeometry("linear", 0.0, False, True, False, 1.0)

    # augmentation: one known example, registered task looked up by its key
    ramp = _scenes(1, seed=1)
    example = {k: v[0] for k, v in ramp.items()}
    out = A.apply_geometry(example, A.Geometry(flip=True))
    want = example["flow"][:, ::-1] * np.array([-1.0, 1.0], np.float32)
    np.testing.assert_allclose(out["flow"], want, atol=1e-5)  # mirrored, x negated
    np.testing.assert_allclose(out["depth"], example["depth"][:, ::-1], atol=1e-6)
    constant = dict(
        example,
        flow=np.broadcast_to([1.5, -0.5], (SIZE, SIZE, 2)).astype(np.float32),
        depth=np.full((SIZE, SIZE, 1), 3.0, np.float32),
    )
    zoomed = A.apply_geometry(constant, A.Geometry(scale=2.0, offset=(2.0, 2.0)), tasks=[flow_task])
    np.testing.assert_allclose(zoomed["flow"], np.broadcast_to([3.0, -1.0], (SIZE, SIZE, 2)))
    np.testing.assert_allclose(zoomed["depth"], 1.5, rtol=1e-6)  # the built-in rule, alongside
    turned = A.apply_geometry(constant, A.Geometry(angle=math.pi / 2))["flow"]
    np.testing.assert_allclose(turned, np.broadcast_to([-0.5, -1.5], (SIZE, SIZE, 2)), atol=1e-5)
    zoom = A.AugmentConfig(flip=True, scales=(1.25,))
    draws = [A.augment(constant, tf.constant([s, 0]), zoom)["flow"][10, 10] for s in range(8)]
    assert {tuple(np.round(d.numpy(), 4)) for d in draws} == {(1.875, -0.625), (-1.875, -0.625)}

    # training data: synthetic scenes, augmented in tf.data
    train, val = _scenes(4, seed=2), _scenes(2, seed=3)
    train_ds = (
        tf.data.Dataset.from_tensor_slices(train)
        .enumerate()
        .map(lambda i, ex: A.augment(ex, tf.stack([i, 7]), zoom, tasks=[flow_task]))
        .map(lambda ex: (ex["image"], {"flow": ex["flow"], "depth": ex["depth"]}))
        .batch(2)
    )
    val_ds = tf.data.Dataset.from_tensor_slices(
        (val["image"], {"flow": val["flow"], "depth": val["depth"]})
    ).batch(2)

    # hard sharing: a TaskSpec object and a built-in name side by side
    keras.utils.set_random_seed(0)
    network = build_hard_sharing(
        [flow_task, "depth"],
        backbone="resnet10",
        backbone_kwargs={"width": 8, "output_stride": 8},
        head="conv",
        head_kwargs={"filters": 8, "num_convs": 1},
        image_size=(SIZE, SIZE),
    )
    model = MultiTaskModel(network)  # the network recorded its specs; the registry rebuilds them
    assert model.tasks["flow"].get_config() == flow_task.get_config()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(train_ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["flow_loss"][-1])
    results = model.evaluate(val_ds, return_dict=True, verbose=0)
    assert np.isfinite(results["flow_epe"]) and "depth_rmse" in results

    # export: the served outputs carry the flow at the request's size
    path = str(tmp_path / "export")
    model.export(path)
    served = tf.saved_model.load(path).signatures["serving_default"]
    outputs = served(images=tf.constant(val["image"][:1]))
    assert outputs["flow"].shape == (1, SIZE, SIZE, 2)
    assert np.all(np.abs(outputs["flow"].numpy()) <= 3.0)  # activated with max_flow=3
    assert served(images=tf.zeros([1, 24, 40, 3], tf.uint8))["flow"].shape == (1, 24, 40, 2)

    # preview: the flow column is drawn by the spec's default colouriser
    grid = preview_grid(
        {"image": val["image"], "flow": val["flow"]}, str(tmp_path / "preview" / "grid.png")
    )
    with Image.open(grid) as png:
        pixels = np.asarray(png.convert("RGB"))
    scale = 3  # 32 px cells upscaled to reach the 72 px minimum width
    cell = SIZE * scale
    assert pixels.shape == (14 + 2 * (cell + 2), 2 * (cell + 2), 3)
    for row in range(2):
        top, left = 14 + row * (cell + 2), cell + 2
        block = pixels[top : top + cell : scale, left : left + cell : scale]
        np.testing.assert_array_equal(block, colorize_map(val["flow"][row]))
    assert os.path.getsize(grid) > 0


class Keypoints(TaskSpec):
    """Heatmaps of a left and a right keypoint: a mirror swaps the channels, a rule
    LabelGeometry cannot state, written as an override of flip_label."""

    def flip_label(self, label):
        return tf.reverse(tf.convert_to_tensor(label), axis=[-1])


def test_subclass_overrides_a_value_rule():
    spec = Keypoints(
        name="keypoints",
        channels=2,
        label_channels=2,
        label_dtype="float32",
        loss=lambda y, p, **kw: tf.reduce_mean(tf.square(p - y)),
        metrics=lambda: [],
        higher_is_better={},
        primary_metric="mse",
        activate=tf.sigmoid,
        serve=lambda raw: {"keypoints": tf.sigmoid(raw)},
        baseline=lambda labels: np.zeros(2, np.float32),
    )
    rng = np.random.default_rng(0)
    example = {
        "image": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "keypoints": rng.uniform(size=(8, 8, 2)).astype(np.float32),
    }
    out = A.apply_geometry(example, A.Geometry(flip=True), tasks=[spec])["keypoints"]
    np.testing.assert_allclose(out, example["keypoints"][:, ::-1, ::-1], atol=1e-6)
    assert type(dataclasses.replace(spec, options={"a": 1})) is Keypoints  # as tasks.get does
    # without the spec the map is no task: refused rather than left unaligned with the image
    with pytest.raises(ValueError, match="'keypoints' is a map of the image's size but no task"):
        A.apply_geometry(example, A.Geometry(flip=True))
