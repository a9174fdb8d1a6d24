"""The comparison table, Δ_MTL and its bar chart from run folders and result files."""

import argparse
import json

import pytest
from PIL import Image

from mtl_keras.evaluation import compare as cmp
from mtl_keras.metrics import write_results


def _run(root, name, tasks, metrics, **extra):
    folder = root / name
    write_results(folder / "results.json", name, metrics, **extra)
    (folder / "recipe.json").write_text(json.dumps({"name": name, "tasks": list(tasks)}))
    return folder


@pytest.fixture
def runs(tmp_path):
    return [
        _run(tmp_path, "st_semseg", ["semseg"], {"semseg_miou": 0.40, "loss": 1.0},
             params=1_000_000, flops=2_000_000_000),
        _run(tmp_path, "st_depth", ["depth"], {"depth_rmse": 0.50, "loss": 2.0}),
        _run(tmp_path, "mtl", ["semseg", "depth"],
             {"semseg_miou": 0.44, "depth_rmse": 0.45, "depth_abs_rel": 0.2},
             params=1_500_000, complexity={"flops": 3_000_000_000}),
    ]  # fmt: skip


def test_table_with_single_task_runs_as_baselines(runs, tmp_path):
    chart = tmp_path / "out" / "delta.png"
    table = cmp.compare(runs, chart=chart)
    lines = table.splitlines()
    assert lines[0] == (
        "| run | tasks | semseg miou (%) ↑ | depth rmse ↓ | params (M) | FLOPs (G) | Δ_MTL (%) ↑ |"
    )
    assert lines[2] == "| st_semseg | semseg | 40.00 |  | 1.00 | 2.00 | +0.00 |"
    assert lines[3] == "| st_depth | depth |  | 0.5000 | — | — | +0.00 |"
    assert lines[4] == "| mtl | semseg, depth | 44.00 | 0.4500 | 1.50 | 3.00 | +10.00 |"
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] == 640


def test_two_result_files_with_explicit_baselines(tmp_path):
    mtl = write_results(tmp_path / "mtl.json", "mtl", {"semseg_miou": 0.36, "depth_rmse": 0.55})
    base = write_results(tmp_path / "single.json", "st", {"semseg_miou": 0.4, "depth_rmse": 0.5})
    table = cmp.compare([mtl, base], baselines=[base])
    mtl_row = table.splitlines()[2]
    assert mtl_row.startswith("| mtl | semseg, depth | 36.00 | 0.5500 |")
    assert mtl_row.endswith("| -10.00 |")  # -10 % mIoU, +10 % RMSE


def test_missing_baseline_is_reported(tmp_path, runs):
    table = cmp.compare([runs[0], runs[2]])  # no single-task depth run
    assert table.splitlines()[-1] == "- mtl: no Δ_MTL, missing baseline or metric depth_rmse"
    assert "| — |" in table.splitlines()[3]


def test_protocol_metric_replaces_the_training_proxy(tmp_path):
    st = _run(tmp_path, "st_edges", ["edges"], {"edges_f": 0.5})
    write_results(st / "protocol.json", "st_edges", {"edges_ods_f": 0.60})
    mt = _run(tmp_path, "mt", ["semseg", "edges"], {"semseg_miou": 0.4, "edges_f": 0.4})
    write_results(mt / "protocol.json", "mt", {"edges_ods_f": 0.66, "semseg_miou": 0.4})
    st_semseg = _run(tmp_path, "st_semseg", ["semseg"], {"semseg_miou": 0.4})
    table = cmp.compare([st, mt, st_semseg])
    assert "edges ods_f (%) ↑" in table.splitlines()[0]
    assert table.splitlines()[3].endswith("| +5.00 |")  # (+10 % + 0 %) / 2


def test_metric_override_and_errors(tmp_path, runs):
    table = cmp.compare(runs, metrics={"depth": "abs_rel"})
    assert "depth abs_rel ↓" in table.splitlines()[0]
    with pytest.raises(ValueError, match="no metric 'nope'"):
        cmp.compare(runs, metrics={"depth": "nope"})
    duplicate = _run(tmp_path, "st_depth_2", ["depth"], {"depth_rmse": 0.4})
    with pytest.raises(ValueError, match="two single-task runs of 'depth'"):
        cmp.compare([*runs, duplicate])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cmp.compare([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds none of"):
        cmp.compare([tmp_path / "empty"])


def test_command_line_pair(runs, tmp_path, capsys):
    parser = cmp.add_arguments(argparse.ArgumentParser())
    out = tmp_path / "cmp"
    args = parser.parse_args([*map(str, runs), "--out", str(out), "--metric", "depth=rmse"])
    assert cmp.run(args) == 0
    assert "| mtl |" in capsys.readouterr().out
    assert (out / "comparison.md").read_text().startswith("| run |")
    assert (out / "delta_mtl.png").is_file()


def test_trivial_row_is_last_and_not_charted(tmp_path):
    st = _run(
        tmp_path, "st_depth", ["depth"], {"depth_rmse": 0.5}, trivial_baseline={"depth_rmse": 1.0}
    )
    mt = _run(
        tmp_path,
        "mt",
        ["semseg", "depth"],
        {"semseg_miou": 0.4, "depth_rmse": 0.45},
        trivial_baseline={"semseg_miou": 0.1, "depth_rmse": 1.0},
    )
    st_semseg = _run(tmp_path, "st_semseg", ["semseg"], {"semseg_miou": 0.4})
    table = cmp.compare([st, st_semseg, mt], trivial=True, chart=tmp_path / "chart.png")
    last = table.splitlines()[-1]
    assert last == "| trivial (constant) | depth, semseg | 1.0000 | 10.00 | — | — | -87.50 |"
    assert "trivial" not in cmp.compare([st, st_semseg, mt])
    with Image.open(tmp_path / "chart.png") as image:  # one bar: the multi-task run
        assert image.size[1] == 28 + 18 + 6 + 6
