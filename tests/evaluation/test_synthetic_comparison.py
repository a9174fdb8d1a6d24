"""``benchmarks/synthetic_comparison.py --quick``: trains, compares and writes the page."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    path = os.path.join(ROOT, "benchmarks", "synthetic_comparison.py")
    spec = importlib.util.spec_from_file_location("synthetic_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(page: str) -> dict[str, list[str]]:
    rows = {}
    for line in page.splitlines():
        if line.startswith("| ") and not line.startswith("| run "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    return rows


@pytest.mark.large
def test_quick_comparison_writes_table_chart_and_grids(tmp_path, capsys):
    script = _script()
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["--quick", "--tasks", "semseg,depth", "--runs", "hard_sharing"]
    argv += ["--out-dir", str(runs), "--docs", str(docs)]
    assert script.main(argv) == 0

    page = (docs / "synthetic_comparison.md").read_text()
    assert "benchmarks/synthetic_comparison.py --quick" in page
    header = next(line for line in page.splitlines() if line.startswith("| run | tasks"))
    assert "semseg miou (%) ↑" in header and "depth rmse ↓" in header
    rows = _rows(page)
    for name in ("single_semseg", "single_depth", "hard_sharing", "trivial (constant)"):
        assert name in rows, name
    for name in ("single_semseg", "single_depth"):
        assert rows[name][-1] == "+0.00"  # Δ_MTL of a baseline against itself
    for name in ("single_semseg", "single_depth", "hard_sharing"):
        params, flops = rows[name][-3], rows[name][-2]
        assert float(params) > 0 and float(flops) > 0
    assert rows["hard_sharing"][-1] not in ("—", "+0.00")
    figures = docs / "synthetic_comparison"
    for name in ("delta_mtl.png", "predictions_semseg.png", "predictions_depth.png"):
        assert (figures / name).is_file() and (figures / name).stat().st_size < 200_000
    assert f"({os.path.join('synthetic_comparison', 'delta_mtl.png')})" in page
    timings = json.loads((runs / ".comparison.json").read_text())["timings"]
    assert set(timings) == {"single_semseg", "single_depth", "hard_sharing"}

    # resumed: every run is finished, nothing trains again
    capsys.readouterr()
    timings = script.train_all(script.plan(script.parse_args(argv)))
    out = capsys.readouterr().out
    assert out.count("finished before, skipped") == 3 and "training (" not in out
    assert all(t["skipped"] for t in timings.values())


def test_page_keeps_hand_written_text(tmp_path):
    script = _script()
    path = str(tmp_path / "page.md")
    script.write_page(path, f"{script.BEGIN}\nfirst\n{script.END}")
    assert open(path).read().startswith("# The survey's comparison")
    with open(path, "a") as f:
        f.write("Notes by hand.\n")
    script.write_page(path, f"{script.BEGIN}\nsecond\n{script.END}")
    text = open(path).read()
    assert "second" in text and "first" not in text and text.endswith("Notes by hand.\n")


def test_settings_that_differ_from_a_finished_run_are_refused(tmp_path):
    script = _script()
    args = script.parse_args(["--quick", "--tasks", "semseg,depth", "--runs", "hard_sharing",
                              "--out-dir", str(tmp_path)])  # fmt: skip
    name, recipe = script.plan(args)[-1]
    assert name == "hard_sharing" and recipe.architecture == "hard_sharing"
    folder = tmp_path / "hard_sharing"
    folder.mkdir()
    (folder / "results.json").write_text("{}")
    (folder / "recipe.json").write_text(json.dumps({"epochs": 99}))
    with pytest.raises(ValueError, match="finished with other"):
        script.finished(recipe)
    with pytest.raises(SystemExit):
        script.parse_args(["--runs", "nope"])
