import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import tasks
from mtl_keras.tasks import losses

LOG2 = math.log(2.0)


def test_registry_lists_valid_names_on_error():
    assert tasks.available() == ["semseg", "depth", "normals", "edges", "saliency", "human_parts"]
    with pytest.raises(ValueError, match="valid tasks: semseg, depth"):
        tasks.get("segmentation")
    with pytest.raises(ValueError, match="listed twice"):
        tasks.resolve(["depth", "depth"])


def test_specs_are_frozen_and_declare_directions():
    spec = tasks.get("semseg", num_classes=5)
    with pytest.raises(AttributeError):
        spec.channels = 3
    assert spec.channels == 5 and spec.ignore_value == 255
    assert tasks.get("depth").directions() == {
        "depth_rmse": False,
        "depth_abs_rel": False,
        "depth_log_rmse": False,
    }
    assert tasks.get("normals").higher_is_better["within_11_25"] is True
    for name in tasks.available():
        s = tasks.get(name)
        assert s.primary_metric in s.higher_is_better


def test_cross_entropy_ignores_255():
    logits = tf.constant([[[[0.0, 0.0], [5.0, -5.0]]]])  # (1, 1, 2, 2)
    label = tf.constant([[[[0], [255]]]], tf.uint8)
    assert losses.softmax_cross_entropy(label, logits).numpy() == pytest.approx(LOG2, rel=1e-6)
    all_ignored = tf.fill([1, 1, 2, 1], tf.constant(255, tf.uint8))
    assert losses.softmax_cross_entropy(all_ignored, logits).numpy() == 0.0


def test_depth_l1_on_valid_pixels_only():
    label = tf.constant([0.0, 2.0, 4.0], shape=[1, 1, 3, 1])
    pred = tf.constant([5.0, 3.0, 3.0], shape=[1, 1, 3, 1])
    assert losses.masked_l1_depth(label, pred).numpy() == pytest.approx(1.0)


def test_normals_l1_normalises_prediction_and_masks_zero_labels():
    label = tf.constant([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], shape=[1, 1, 3, 3])
    pred = tf.constant([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [9.0, 9.0, 9.0]], shape=[1, 1, 3, 3])
    # pixel 1: |0|+|0|+|1-1| = 0; pixel 2: |1|+|0|+|0-1| = 2; over 2 valid pixels x 3 elements
    assert losses.normals_l1(label, pred).numpy() == pytest.approx(2.0 / 6.0)


def test_balanced_bce_fixed_weight():
    label = tf.constant([1.0, 0.0], shape=[1, 1, 2, 1])
    logits = tf.zeros([1, 1, 2, 1])
    got = losses.balanced_bce(label, logits, pos_weight=0.95).numpy()
    assert got == pytest.approx((0.95 * LOG2 + 0.05 * LOG2) / 2, rel=1e-6)


def test_balanced_bce_automatic_weight_is_fraction_of_negatives():
    label = tf.constant([1.0, 0.0, 0.0, 0.0], shape=[1, 1, 4, 1])
    logits = tf.zeros([1, 1, 4, 1])
    got = losses.balanced_bce(label, logits, pos_weight=None).numpy()
    assert got == pytest.approx((0.75 * LOG2 + 3 * 0.25 * LOG2) / 4, rel=1e-6)


def test_bce_is_stable_for_huge_logits():
    label = tf.constant([1.0, 0.0], shape=[1, 1, 2, 1])
    logits = tf.constant([1e4, -1e4], shape=[1, 1, 2, 1])
    assert np.isfinite(losses.balanced_bce(label, logits, pos_weight=0.95).numpy())


def test_baselines_and_colorize():
    seg = tasks.get("semseg", num_classes=3)
    labels = np.array([0, 2, 2, 255], np.uint8).reshape(1, 2, 2, 1)
    assert int(np.argmax(seg.baseline(labels))) == 2
    depth = tasks.get("depth")
    assert depth.baseline(np.array([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1))[0] == pytest.approx(2.0)
    for name in tasks.available():
        spec = tasks.get(name) if name not in ("semseg", "human_parts") else seg
        arr = np.random.default_rng(0).random((4, 5, spec.label_channels)).astype(np.float32)
        rgb = spec.colorize(arr)
        assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8


def test_serving_outputs_per_task():
    seg = tasks.get("semseg", num_classes=3)
    out = seg.serve(tf.constant([[[[0.0, 3.0, 1.0]]]]))
    assert out["semseg_class"].numpy().item() == 1
    np.testing.assert_allclose(out["semseg_probs"].numpy().sum(-1), 1.0, rtol=1e-6)
    normals = tasks.get("normals").serve(tf.constant([[[[3.0, 0.0, 4.0]]]]))["normals"]
    np.testing.assert_allclose(normals.numpy().ravel(), [0.6, 0.0, 0.8], rtol=1e-6)


def test_label_geometry_and_drawing_of_the_built_in_tasks():
    # what the augmentation and the previews read (they no longer know task names)
    for name in ("semseg", "human_parts", "edges", "saliency"):
        geometry = tasks.get(name).label_geometry
        assert (geometry.resample, geometry.fill, geometry.masked) == ("nearest", 255.0, False)
    depth, normals = tasks.get("depth").label_geometry, tasks.get("normals").label_geometry
    assert (depth.resample, depth.masked, depth.vector, depth.scale_power) == (
        "linear",
        True,
        False,
        -1.0,
    )
    assert (normals.resample, normals.masked, normals.vector, normals.unit) == (
        "linear",
        True,
        True,
        True,
    )
    n = tf.constant([[[0.6, 0.8, 0.0]]])
    np.testing.assert_allclose(tasks.get("normals").flip_label(n), [[[-0.6, 0.8, 0.0]]])
    turned = tasks.get("normals").rotate_label(n, math.pi / 2)
    np.testing.assert_allclose(turned, [[[0.8, -0.6, 0.0]]], atol=1e-6)
    np.testing.assert_array_equal(tasks.get("semseg").scale_label(tf.constant([3.0]), 2.0), [3.0])
    np.testing.assert_allclose(tasks.get("depth").scale_label(tf.constant([3.0]), 1.5), [2.0])


def test_a_minimal_spec_gets_the_defaults_of_a_continuous_task():
    spec = tasks.TaskSpec(
        name="heat",
        channels=1,
        label_channels=1,
        label_dtype="float32",
        loss=lambda y, p, **kw: tf.reduce_mean(p - y),
        metrics=lambda: [],
        higher_is_better={},
        primary_metric="mae",
        activate=tf.identity,
        serve=lambda raw: {"heat": raw},
        baseline=lambda labels: np.zeros(1, np.float32),
    )
    assert spec.interpolation == "bilinear" and spec.ignore_value is None
    assert spec.label_geometry == tasks.LabelGeometry("linear", 0.0)
    label = tf.constant([[[1.0], [2.0]]])
    np.testing.assert_array_equal(spec.flip_label(label), label)
    np.testing.assert_array_equal(spec.scale_label(label, 2.0), label)
    rgb = spec.colorize(np.array([[[-1.0], [2.0]]], np.float32))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert not np.array_equal(rgb[0, 0], rgb[0, 1])  # negative values are drawn too
    assert tasks.colors.colorize_map(np.zeros((2, 3, 2), np.float32)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="interpolation"):
        dataclasses.replace(spec, interpolation="cubic")
    with pytest.raises(ValueError, match="resample"):
        tasks.LabelGeometry(resample="cubic")


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="registered already"):
        tasks.register("depth", tasks.depth)
    with pytest.raises(ValueError, match="identifier"):
        tasks.register("my task", tasks.depth)
    tasks.register("depth_copy", tasks.depth)
    try:
        with pytest.raises(ValueError, match="built a task 'depth'"):
            tasks.get("depth_copy")
    finally:
        tasks.TASKS.pop("depth_copy")
