"""Augmentation keeps every label consistent with the image."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.data import augment as A


def _example(h=8, w=8, seed=0):
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(h, w, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "semseg": rng.integers(0, 5, (h, w, 1)).astype(np.uint8),
        "edges": (rng.uniform(size=(h, w, 1)) < 0.3).astype(np.float32),
        "depth": rng.uniform(1.0, 4.0, (h, w, 1)).astype(np.float32),
        "normals": normals.astype(np.float32),
        "id": "x",
    }


def test_identity_and_resize_to_same_size_change_nothing():
    ex = _example()
    for out in (A.apply_geometry(ex, A.Geometry()), A.resize(ex, (8, 8))):
        for key in ("image", "semseg", "edges", "depth"):
            np.testing.assert_array_equal(out[key], ex[key])
        np.testing.assert_allclose(out["normals"], ex["normals"], atol=1e-6)
        assert out["id"] == "x" and out["semseg"].dtype == tf.uint8


def test_flip_mirrors_maps_and_negates_normal_x():
    ex = _example()
    out = A.apply_geometry(ex, A.Geometry(flip=True))
    np.testing.assert_array_equal(out["image"], ex["image"][:, ::-1])
    np.testing.assert_array_equal(out["semseg"], ex["semseg"][:, ::-1])
    np.testing.assert_array_equal(out["depth"], ex["depth"][:, ::-1])
    want = ex["normals"][:, ::-1] * np.array([-1.0, 1.0, 1.0], np.float32)
    np.testing.assert_allclose(out["normals"], want, atol=1e-6)


def test_random_flip_draws_both_outcomes():
    ex = _example()
    config = A.AugmentConfig(flip=True)
    flipped = [
        np.array_equal(A.augment(ex, tf.constant([s, 0]), config)["image"], ex["image"][:, ::-1])
        for s in range(12)
    ]
    assert any(flipped) and not all(flipped)


def test_zoom_divides_depth_by_the_scale():
    ex = _example()
    ex["depth"] = np.full((8, 8, 1), 3.0, np.float32)
    out = A.apply_geometry(ex, A.Geometry(scale=1.5, offset=(2.0, 2.0)))
    np.testing.assert_allclose(out["depth"], 2.0, rtol=1e-6)
    # zoom 2 from the top-left: each input pixel becomes a 2 x 2 block (nearest for classes)
    out = A.apply_geometry(ex, A.Geometry(scale=2.0))
    want = np.repeat(np.repeat(ex["semseg"][:4, :4], 2, 0), 2, 1)
    np.testing.assert_array_equal(out["semseg"], want)
    for seed in range(5):  # the NYUD preset zooms by 1, 1.2 or 1.5
        depth = A.augment(ex, tf.constant([seed, 1]), A.NYUD_AUGMENT)["depth"].numpy()
        assert any(np.allclose(depth, 3.0 / s, rtol=1e-5) for s in (1.0, 1.2, 1.5))


def test_rotation_turns_normals_with_the_image():
    ex = _example(7, 7)
    out = A.apply_geometry(ex, A.Geometry(angle=math.pi / 2))
    np.testing.assert_array_equal(out["semseg"][..., 0], np.rot90(ex["semseg"][..., 0]))
    turned = np.rot90(ex["normals"])  # counter-clockwise on screen, y down
    want = np.stack([turned[..., 1], -turned[..., 0], turned[..., 2]], axis=-1)
    np.testing.assert_allclose(out["normals"], want, atol=1e-5)
    # a constant field rotated by 30 degrees: (x cos + y sin, -x sin + y cos, z) where valid
    n = np.array([0.6, 0.0, 0.8], np.float32)
    ex["normals"] = np.broadcast_to(n, (7, 7, 3)).copy()
    out = A.apply_geometry(ex, A.Geometry(angle=math.radians(30)))["normals"].numpy()
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    valid = np.linalg.norm(out, axis=-1) > 0
    np.testing.assert_allclose(out[valid], [[0.6 * c, -0.6 * s, 0.8]] * valid.sum(), atol=1e-5)
    assert valid.sum() >= 25 and not valid.all()  # rotated corners are padding


def test_zoom_out_pads_with_ignore_and_invalid():
    ex = _example()
    ex["depth"] = np.full((8, 8, 1), 3.0, np.float32)
    out = A.apply_geometry(ex, A.Geometry(scale=0.5))
    assert np.all(out["semseg"].numpy()[4:] == 255) and np.all(out["edges"].numpy()[:, 4:] == 255)
    assert np.all(out["depth"].numpy()[4:] == 0) and np.all(out["normals"].numpy()[4:] == 0)
    assert np.all(out["image"].numpy()[4:] == 0)
    np.testing.assert_allclose(out["depth"].numpy()[:4, :4], 6.0, rtol=1e-6)  # 3 m / 0.5


@pytest.mark.parametrize("config", [A.PASCAL_AUGMENT, A.NYUD_AUGMENT, A.MTAN_AUGMENT])
def test_class_maps_stay_in_their_label_set(config):
    ex = _example(10, 12, seed=1)
    for seed in range(4):
        out = A.augment(ex, tf.constant([seed, 7]), config, output_size=(6, 9))
        assert out["semseg"].shape == (6, 9, 1)
        assert set(np.unique(out["semseg"])) <= set(np.unique(ex["semseg"])) | {255}
        assert set(np.unique(out["edges"])) <= {0.0, 1.0, 255.0}
        norms = np.linalg.norm(out["normals"].numpy(), axis=-1)
        assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_invalid_depth_does_not_bleed_into_valid_pixels():
    ex = _example()
    ex["depth"][:, :4] = 0.0
    ex["depth"][:, 4:] = 2.0
    out = A.resize(ex, (8, 5))["depth"].numpy()
    assert set(np.unique(out)) <= {0.0, 2.0}


def test_jitter_changes_the_image_only_and_is_seeded():
    ex = _example()
    config = A.AugmentConfig(flip=False, brightness=0.2, contrast=0.3, saturation=0.3, hue=0.1)
    a = A.augment(ex, tf.constant([5, 5]), config)
    b = A.augment(ex, tf.constant([5, 5]), config)
    assert not np.array_equal(a["image"], ex["image"])
    np.testing.assert_array_equal(a["image"], b["image"])
    for key in ("semseg", "edges", "depth"):
        np.testing.assert_array_equal(a[key], ex[key])


def test_same_seed_same_result_in_tf_data():
    ex = _example()
    eager = A.augment(ex, tf.constant([9, 4], tf.int64), A.PASCAL_AUGMENT, (5, 5))
    ds = tf.data.Dataset.from_tensors({k: v for k, v in ex.items() if k != "id"})
    ds = ds.map(lambda e: A.augment(e, tf.constant([9, 4], tf.int64), A.PASCAL_AUGMENT, (5, 5)))
    graph = next(iter(ds))
    np.testing.assert_array_equal(graph["semseg"], eager["semseg"])
    np.testing.assert_allclose(graph["image"], eager["image"], atol=1)  # float rounding
    for key in ("depth", "normals"):
        np.testing.assert_allclose(graph[key], eager[key], atol=1e-5)
    assert all(graph[k].shape == eager[k].shape for k in graph)


def test_config_validation():
    with pytest.raises(ValueError, match="scale_range"):
        A.AugmentConfig(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="hue"):
        A.AugmentConfig(hue=0.7)


def test_a_map_that_is_no_task_is_refused_other_keys_pass_through():
    ex = {**_example(), "flow": np.zeros((8, 8, 2), np.float32), "sizes": np.zeros((2,))}
    with pytest.raises(ValueError, match="'flow' is a map of the image's size but no task"):
        A.apply_geometry(ex, A.Geometry())
    del ex["flow"]
    out = A.apply_geometry(ex, A.Geometry(), (4, 4))
    assert out["id"] == "x" and out["sizes"].shape == (2,)
