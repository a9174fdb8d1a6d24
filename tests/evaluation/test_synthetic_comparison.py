"""``benchmarks/synthetic_comparison.py``: the study's runs come from the registries; ``--quick``
trains, records, resumes and writes the page."""

import importlib.util
import json
import os
import sys

import pytest

from mtl_keras import architectures, balancing
from mtl_keras.evaluation import study

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    path = os.path.join(ROOT, "benchmarks", "synthetic_comparison.py")
    spec = importlib.util.spec_from_file_location("synthetic_comparison", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _rows(page: str) -> dict[str, list[str]]:
    rows = {}
    for line in page.splitlines():
        if line.startswith("| ") and not line.startswith("| run "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], cells)
    return rows


def test_every_registered_architecture_and_balancer_is_in_the_study_with_every_seed(tmp_path):
    script = _script()
    runs = script.plan(script.parse_args(["--out-dir", str(tmp_path)]))
    groups = {run.group for run in runs}
    expected = {f"single_{t}" for t in script.TASKS}
    expected |= {a for a in architectures.available() if a != "single_task"}
    expected |= {f"hs_{b}" for b in balancing.available() if b != "fixed"}
    assert groups == expected
    assert len(runs) == 3 * len(expected)
    for run in runs:
        assert run.name == f"{run.group}_s{run.seed}" and run.recipe.seed == run.seed
        assert run.recipe.output_dir == f"{tmp_path}/{run.name}"
        if run.kind == "balancer":
            assert run.recipe.architecture == "hard_sharing"
            assert run.recipe.balancer == run.group[len("hs_") :]
        elif run.kind == "architecture":
            assert run.recipe.architecture == run.group and run.recipe.balancer == "fixed"
    by_name = {run.name: run.recipe for run in runs}
    assert by_name["hs_mgda_s1"].gradient_source == "representation"  # MGDA-UB
    assert by_name["astmt_s2"].adversarial_weight > 0
    # a subset by pattern; a pattern that matches nothing is refused
    some = script.plan(script.parse_args(["--groups", "hs_*grad", "--seeds", "4"]))
    assert {r.group for r in some} == {
        "hs_cagrad",
        "hs_fairgrad",
        "hs_pcgrad",
        "hs_sdmgrad",
        "hs_upgrad",
    } and {r.seed for r in some} == {4}
    with pytest.raises(SystemExit, match="no group matches"):
        script.plan(script.parse_args(["--groups", "nope*"]))


@pytest.mark.large
def test_quick_study_records_every_run_resumes_and_writes_the_page(tmp_path, capsys):
    script = _script()
    runs = tmp_path / "runs"
    argv = ["--quick", "--tasks", "semseg,depth", "--out-dir", str(runs)]
    assert script.main(argv) == 0

    results = json.loads((runs / "results.json").read_text())
    names = {r["run"] for r in results["records"]}
    assert names == {"single_semseg_s0", "single_depth_s0", "hard_sharing_s0", "hs_pcgrad_s0"}
    for record in results["records"]:
        assert record["params"] > 0 and record["flops"] > 0 and record["wall_s"] > 0
        assert set(record["metrics"]) >= {
            f"{t}_{k}" for t, k in (("semseg", "miou"), ("depth", "rmse")) if t in record["tasks"]
        }
        assert record["recipe"]["seed"] == 0 and record["recipe"]["image_size"] == [32, 32]
    page_path = runs / "docs" / "synthetic_comparison.md"
    page = page_path.read_text()
    assert "benchmarks/synthetic_comparison.py --quick" in page
    rows = _rows(page)
    for name in (
        "single_semseg",
        "single_depth",
        "hard_sharing",
        "hs_pcgrad",
        "trivial (constant)",
    ):
        assert name in rows, name
    assert rows["hard_sharing"][-1] == "ref"
    for name in ("delta_mtl.png", "pareto.png"):
        assert (runs / "docs" / "synthetic_comparison" / name).stat().st_size > 1000

    # resumed: every run is recorded, nothing trains again; the page is rebuilt from the file
    capsys.readouterr()
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("finished before, reused") == 4 and "training (" not in out
    rebuilt = tmp_path / "rebuilt.md"
    study.rebuild(str(runs / "results.json"), str(rebuilt), script.INTRO)
    table = lambda text: [line for line in text.splitlines() if line.startswith("| ")]  # noqa: E731
    assert table(rebuilt.read_text()) == table(page_path.read_text())


def test_settings_that_differ_from_a_finished_run_are_refused(tmp_path):
    script = _script()
    args = script.parse_args(
        [
            "--quick",
            "--tasks",
            "semseg,depth",
            "--groups",
            "hard_sharing",
            "--out-dir",
            str(tmp_path),
        ]
    )
    (run,) = script.plan(args)
    assert run.name == "hard_sharing_s0" and run.recipe.architecture == "hard_sharing"
    # a record of other settings in the results file
    content = {"study": {}, "records": [{"run": run.name, "recipe": {"epochs": 99}}]}
    with pytest.raises(ValueError, match="recorded with other"):
        script.finished(run, content)
    # a finished run folder of other settings
    folder = tmp_path / "hard_sharing_s0"
    folder.mkdir()
    (folder / "results.json").write_text("{}")
    (folder / "recipe.json").write_text(json.dumps({"epochs": 99}))
    with pytest.raises(ValueError, match="finished with other"):
        script.finished(run, {"study": {}, "records": []})
    with pytest.raises(SystemExit):
        script.parse_args(["--tasks", "semseg"])
