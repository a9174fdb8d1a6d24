import pytest

from mtl_keras.metrics import delta_mtl
from mtl_keras.training.grid_search import grid_search, weight_grid
from mtl_keras.training.recipe import Recipe


def test_weight_grid_enumerates_every_assignment():
    grid = weight_grid(["semseg", "depth"], [1.0, 10.0])
    assert grid == [
        {"semseg": 1.0, "depth": 1.0},
        {"semseg": 1.0, "depth": 10.0},
        {"semseg": 10.0, "depth": 1.0},
        {"semseg": 10.0, "depth": 10.0},
    ]


def test_grid_search_ranks_short_trainings_by_delta_mtl(tmp_path):
    recipe = Recipe(
        name="grid",
        tasks=("semseg", "depth"),
        image_size=(32, 32),
        train_examples=8,
        val_examples=4,
        batch_size=4,
        epochs=1,
        backbone="resnet10",
        backbone_kwargs={"width": 8},
        head="conv",
        run_dir=str(tmp_path),
        image_summaries=1,
    )
    baselines = {"semseg_miou": 0.2, "depth_rmse": 1.0}
    ranked = grid_search(recipe, [{"semseg": 1.0, "depth": 1.0}, {"depth": 100.0}], baselines)
    assert len(ranked) == 2
    assert ranked[0]["delta_mtl"] >= ranked[1]["delta_mtl"]
    for r in ranked:
        expected = delta_mtl(r["metrics"], baselines, {"semseg_miou": True, "depth_rmse": False})
        assert r["delta_mtl"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one"):
        grid_search(recipe, [], baselines)
