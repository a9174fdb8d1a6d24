import json
import os

import numpy as np
import pytest

from mtl_keras.metrics import delta_mtl, load_baselines, write_results

DIRECTIONS = {"semseg_miou": True, "depth_rmse": False, "normals_mean": False}
BASELINES = {"semseg_miou": 0.50, "depth_rmse": 0.50, "normals_mean": 25.0}
RESULTS = {"semseg_miou": 0.45, "depth_rmse": 0.60, "normals_mean": 20.0, "semseg_pixel_acc": 0.1}


def test_hand_computed_delta_with_mixed_directions():
    # semseg -10 %, depth rmse +20 % (worse: -20), normals mean -20 % (better: +20); mean -10/3.
    assert delta_mtl(RESULTS, BASELINES, DIRECTIONS) == pytest.approx(-10.0 / 3.0)


def test_only_listed_metrics_count_and_equal_models_give_zero():
    assert delta_mtl(BASELINES, BASELINES, DIRECTIONS) == 0.0
    assert delta_mtl(RESULTS, BASELINES, {"normals_mean": False}) == pytest.approx(20.0)


def test_missing_and_zero_values_raise_with_the_key():
    with pytest.raises(ValueError, match="'depth_rmse' is missing from the results.*semseg_miou"):
        delta_mtl({"semseg_miou": 0.4}, BASELINES, DIRECTIONS)
    with pytest.raises(ValueError, match="'normals_mean' is missing from the baselines"):
        delta_mtl(RESULTS, {"semseg_miou": 0.5, "depth_rmse": 0.5}, DIRECTIONS)
    with pytest.raises(ValueError, match="baseline of 'depth_rmse' is 0"):
        delta_mtl(RESULTS, {**BASELINES, "depth_rmse": 0.0}, DIRECTIONS)
    with pytest.raises(ValueError, match="at least one metric"):
        delta_mtl(RESULTS, BASELINES, {})


def test_write_results_is_atomic_json_with_extras(tmp_path):
    path = tmp_path / "new" / "semseg.json"
    out = write_results(path, "semseg", {"semseg_miou": np.float32(0.5)}, epochs=np.int64(3))
    assert out == str(path)
    assert json.loads(path.read_text()) == {
        "task": "semseg",
        "metrics": {"semseg_miou": 0.5},
        "epochs": 3,
    }
    write_results(path, "semseg", {"semseg_miou": 0.25})  # replaces the file
    assert json.loads(path.read_text())["metrics"] == {"semseg_miou": 0.25}
    assert os.listdir(path.parent) == ["semseg.json"]  # no temporary file left behind
    with pytest.raises(ValueError, match="may not be named 'task'"):
        write_results(path, "semseg", {}, task="depth")


def test_load_baselines_merges_files_and_folders(tmp_path):
    a = write_results(tmp_path / "semseg" / "results" / "r.json", "semseg", {"semseg_miou": 0.5})
    b = write_results(tmp_path / "depth" / "r.json", "depth", {"depth_rmse": 0.6})
    (tmp_path / "depth" / "recipe.json").write_text(json.dumps({"name": "depth"}))
    expected = {"semseg_miou": 0.5, "depth_rmse": 0.6}
    assert load_baselines(tmp_path) == expected
    assert load_baselines([a, b]) == expected
    assert load_baselines(f"{a},{b}") == expected
    with pytest.raises(ValueError, match="no 'metrics' mapping"):
        load_baselines(tmp_path / "depth" / "recipe.json")
    with pytest.raises(FileNotFoundError, match="neither a result JSON file nor a folder"):
        load_baselines(tmp_path / "missing.json")


def test_conflicting_values_are_dropped_with_a_warning(tmp_path):
    write_results(tmp_path / "a.json", "semseg", {"semseg_miou": 0.5, "loss": 1.0})
    write_results(tmp_path / "b.json", "depth", {"depth_rmse": 0.6, "loss": 2.0})
    with pytest.warns(UserWarning, match="loss"):
        assert load_baselines(tmp_path) == {"semseg_miou": 0.5, "depth_rmse": 0.6}


def test_round_trip_into_delta(tmp_path):
    for task, value in (("semseg", 0.5), ("depth", 0.5), ("normals", 25.0)):
        key = {"semseg": "semseg_miou", "depth": "depth_rmse", "normals": "normals_mean"}[task]
        write_results(tmp_path / f"{task}.json", task, {key: value})
    assert delta_mtl(RESULTS, load_baselines(tmp_path), DIRECTIONS) == pytest.approx(-10.0 / 3.0)
