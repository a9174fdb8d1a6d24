"""Survey-style evaluation at the original resolution, checked against hand-computed scores."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from mtl_keras.evaluation import protocol
from mtl_keras.tasks import resolve

TASKS = ("semseg", "human_parts", "depth", "normals", "saliency", "edges")


def constant_network(size=(4, 4)):
    """A functional model whose raw outputs are constant: class 1, class 0, 2 m, +z, 0.5, 0."""
    image = keras.Input((*size, 3), name="image")
    biases = {
        "semseg": [0.0, 5.0, 0.0], "human_parts": [5.0, 0.0, 0.0], "depth": [2.0],
        "normals": [0.0, 0.0, 1.0], "saliency": [0.0], "edges": [-20.0],
    }  # fmt: skip
    outputs = {
        task: keras.layers.Conv2D(
            len(b), 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(b),
            name=task,
        )(image)
        for task, b in biases.items()
    }  # fmt: skip
    return keras.Model(image, outputs)


def _examples():
    rng = np.random.default_rng(0)
    out = []
    for k, (h, w) in enumerate([(6, 8), (5, 7)]):
        normals = np.zeros((h, w, 3), np.float32)
        normals[..., 2] = 1.0
        normals[0, 0] = (1.0, 0.0, 0.0)  # 90 degrees off
        normals[1, 1] = 0.0  # invalid
        parts = rng.integers(0, 3, (h, w, 1)).astype(np.uint8)
        if k == 1:
            parts[:] = 255  # no person: skipped
        depth = rng.uniform(1.0, 3.0, (h, w, 1)).astype(np.float32)
        depth[0, :2] = 0.0
        out.append({
            "id": f"im{k}",
            "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "semseg": rng.integers(0, 3, (h, w, 1)).astype(np.uint8),
            "human_parts": parts,
            "depth": depth,
            "normals": normals,
            "saliency": (rng.uniform(size=(h, w, 1)) < 0.4).astype(np.float32),
            "edges": np.zeros((h, w, 1), np.float32),
        })  # fmt: skip
    return out


def _specs():
    options = {
        "semseg": {"num_classes": 3},
        "human_parts": {"num_classes": 3},
        "saliency": {"beta2": 0.3},
    }
    return resolve(TASKS, options)


def test_scores_at_original_resolution_by_hand():
    examples = _examples()
    scores = protocol.evaluate(constant_network(), examples, _specs(), image_size=(4, 4))
    # semseg: class 1 everywhere -> IoU_1 = n1 / N, IoU_0 = IoU_2 = 0 (present in labels)
    sem = np.concatenate([e["semseg"].ravel() for e in examples])
    assert scores["semseg_miou"] == pytest.approx(np.mean(sem == 1) / 3, rel=1e-6)
    # human parts: only the first image counts; class 0 everywhere
    parts = examples[0]["human_parts"].ravel()
    present = len(np.unique(parts))
    assert scores["human_parts_miou"] == pytest.approx(np.mean(parts == 0) / present, rel=1e-6)
    # depth: 2 m everywhere, pooled over the valid pixels of both images
    gt = np.concatenate([e["depth"].ravel() for e in examples])
    rmse = np.sqrt(np.mean((gt[gt > 0] - 2.0) ** 2))
    assert scores["depth_rmse"] == pytest.approx(rmse, rel=1e-5)
    # normals: +z everywhere, stored in 8 bits by truncation as (127, 127, 255) (the survey's
    # ``(n + 1) * 255 / 2`` then ``astype(np.uint8)``); one pixel per image is the x axis (about
    # 90 degrees off), one is invalid
    valid = sum(e["normals"].shape[0] * e["normals"].shape[1] - 1 for e in examples)
    q = np.array([2 * 127 / 255 - 1, 2 * 127 / 255 - 1, 1.0])
    q /= np.linalg.norm(q)
    on_z, on_x = np.degrees(np.arccos(q[2])), np.degrees(np.arccos(q[0]))
    want = (2 * on_x + (valid - 2) * on_z) / valid
    assert scores["normals_mean"] == pytest.approx(want, abs=1e-3)
    # saliency: p = 0.5 -> 127 / 255 after truncation: positive (pred > t) for thresholds up to
    # 0.45 (P = rate, R = 1), nothing above; maxF with beta2 = 0.3 at those thresholds
    p = np.mean([e["saliency"].mean() for e in examples])
    assert scores["saliency_max_f"] == pytest.approx(1.3 * p / (0.3 * p + 1.0), rel=1e-5)
    assert scores["edges_ods_f"] == 0.0 and "edges_f" not in scores


def test_human_parts_skips_images_without_people():
    evaluator = protocol.SurveyEvaluator(constant_network(), _specs(), image_size=(4, 4))
    for example in _examples():
        evaluator.update(example)
    assert evaluator.counts() == {"images": 2, "human_parts_images": 1}


def test_evaluate_to_file_is_readable_by_compare(tmp_path):
    network = constant_network()
    path = tmp_path / "run" / "protocol.json"
    out = protocol.evaluate_to_file(
        network, _examples(), _specs(), path, name="mtl", image_size=(4, 4), edge_max_dist=0.011
    )
    content = json.loads(path.read_text())
    assert content["task"] == "mtl" and content["params"] == out["params"] > 0
    assert content["flops"] > 0 and content["protocol"]["edge_max_dist"] == 0.011
    assert content["protocol"]["name"] == "survey"
    assert content["counts"] == {"images": 2, "human_parts_images": 1}
    assert "edges_ods_f" in content["metrics"] and "images" not in content["metrics"]
    from mtl_keras.evaluation.compare import read_run

    run = read_run(path.parent)
    assert run.params == content["params"] and set(TASKS) <= set(run.tasks)


def test_prediction_grid_writes_png(tmp_path):
    specs = resolve(("semseg", "depth"), {"semseg": {"num_classes": 3}})
    images = np.zeros((2, 4, 4, 3), np.uint8)
    labels = {"semseg": np.ones((2, 4, 4, 1), np.uint8), "depth": np.ones((2, 4, 4, 1), np.float32)}
    path = protocol.prediction_grid(constant_network(), images, labels, specs, tmp_path / "g.png")
    with Image.open(path) as grid:
        assert grid.format == "PNG" and grid.size[0] > grid.size[1]
