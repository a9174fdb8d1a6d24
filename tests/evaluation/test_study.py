"""`mtl_keras.evaluation.study`: statistics over seeds, the test against the reference, the
figures and the page, rebuilt from the results file alone."""

import json
import math
import statistics

import pytest
from PIL import Image

from mtl_keras import cli
from mtl_keras.evaluation import pareto, study
from mtl_keras.metrics import significance


def _t_density(x, dof):
    return (
        math.exp(math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2))
        / math.sqrt(dof * math.pi)
        * (1 + x * x / dof) ** (-(dof + 1) / 2)
    )


def _two_sided_by_quadrature(t, dof, steps=200_000):
    """2 * integral of the density from |t| to infinity, as 1 - 2 * integral from 0 to |t|
    (Simpson's rule): an independent computation of the p-value."""
    t = abs(t)
    h = t / steps
    total = _t_density(0, dof) + _t_density(t, dof)
    total += sum((4 if i % 2 else 2) * _t_density(i * h, dof) for i in range(1, steps))
    return 1.0 - 2.0 * total * h / 3.0


@pytest.mark.parametrize(
    "t, dof", [(2.7764451, 4.0), (12.7062047, 1.0), (2.2281389, 10.0), (0.3, 2.5), (5.0, 3.7)]
)
def test_student_t_p_value_matches_quadrature(t, dof):
    assert significance.student_t_two_sided(t, dof) == pytest.approx(
        _two_sided_by_quadrature(t, dof), abs=1e-7
    )
    assert significance.student_t_two_sided(-t, dof) == significance.student_t_two_sided(t, dof)


def test_textbook_critical_values_give_five_percent():
    for t, dof in ((2.7764451, 4), (12.7062047, 1), (2.2281389, 10), (1.9599640, 1e7)):
        assert significance.student_t_two_sided(t, dof) == pytest.approx(0.05, abs=1e-6)


def test_welch_test():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    t, dof, p = significance.welch_test(a, b)
    # equal variances and sizes: t = -3 / sqrt(2/3), dof = 2 (n - 1)
    assert t == pytest.approx(-3 / math.sqrt(2 / 3)) and dof == pytest.approx(4.0)
    assert p == pytest.approx(_two_sided_by_quadrature(t, dof), abs=1e-7)
    # unequal variances: Welch-Satterthwaite degrees of freedom
    a, b = [0.0, 1.0, 5.0], [2.0, 2.1, 2.2, 2.05]
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 4
    t, dof, _ = significance.welch_test(a, b)
    assert dof == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 3))
    assert significance.welch_test([1.0], [1.0, 2.0]) is None
    assert significance.welch_test([1.0, 1.0], [2.0, 2.0]) is None


def _record(group, seed, kind, tasks, metrics, flops=1_000_000_000, params=1_000_000):
    return {
        "run": f"{group}_s{seed}",
        "group": group,
        "seed": seed,
        "kind": kind,
        "description": group,
        "tasks": list(tasks),
        "metrics": metrics,
        "params": params,
        "flops": flops,
        "trivial_baseline": {"semseg_miou": 0.1, "depth_rmse": 2.0},
        "recipe": {},
        "wall_s": 10.0,
    }


def _content():
    records = []
    for seed, (miou, rmse) in enumerate([(0.50, 1.00), (0.52, 0.98), (0.48, 1.02)]):
        records.append(
            _record(
                "single_semseg", seed, "single_task", ["semseg"], {"semseg_miou": miou}, flops=5e8
            )
        )
        records.append(
            _record("single_depth", seed, "single_task", ["depth"], {"depth_rmse": rmse}, flops=5e8)
        )
    both = ["semseg", "depth"]
    for seed, (miou, rmse) in enumerate([(0.45, 1.00), (0.46, 1.01), (0.44, 0.99)]):
        records.append(
            _record(
                "hard_sharing",
                seed,
                "architecture",
                both,
                {"semseg_miou": miou, "depth_rmse": rmse},
                flops=6e8,
            )
        )
    for seed, (miou, rmse) in enumerate([(0.55, 0.90), (0.56, 0.91), (0.54, 0.89)]):
        records.append(
            _record(
                "big",
                seed,
                "architecture",
                both,
                {"semseg_miou": miou, "depth_rmse": rmse},
                flops=2e9,
            )
        )
    for seed, (miou, rmse) in enumerate([(0.40, 1.2), (0.50, 0.9), (0.45, 1.05)]):
        records.append(
            _record(
                "hs_noisy",
                seed,
                "balancer",
                both,
                {"semseg_miou": miou, "depth_rmse": rmse},
                flops=6e8,
            )
        )
    study_fields = {
        "command": "python x.py",
        "date": "2026-12-03",
        "seeds": [0, 1, 2],
        "machine": {"cpus": 2},
        "settings": {"description": "tiny"},
        "reference": "hard_sharing",
        "alpha": 0.05,
        "scope": "synthetic only",
    }
    return {"study": study_fields, "records": records}


def test_summary_means_stds_deltas_and_marks():
    rows, primary = study.summarize(_content())
    assert primary == {"semseg": ("semseg_miou", True), "depth": ("depth_rmse", False)}
    by = {r["group"]: r for r in rows}
    assert list(by) == [
        "single_semseg",
        "single_depth",
        "hard_sharing",
        "big",
        "hs_noisy",
        "trivial (constant)",
    ]
    mean, std = by["hard_sharing"]["values"]["semseg"]
    assert mean == pytest.approx(0.45) and std == pytest.approx(0.01)
    # Δ_MTL per seed against the seed-averaged baselines (0.50 mIoU, 1.00 RMSE)
    expected = [
        50 * ((m - 0.5) / 0.5 - (r - 1.0) / 1.0)
        for m, r in [(0.45, 1.00), (0.46, 1.01), (0.44, 0.99)]
    ]
    assert by["hard_sharing"]["deltas"] == pytest.approx(expected)
    assert by["hard_sharing"]["delta"] == pytest.approx(statistics.fmean(expected))
    assert by["hard_sharing"]["delta_std"] == pytest.approx(statistics.stdev(expected))
    assert by["hard_sharing"]["mark"] == "ref" and by["hard_sharing"]["test"] is None
    assert by["big"]["mark"] == "▲" and by["big"]["test"][2] < 0.05
    assert by["hs_noisy"]["mark"] == "" and by["hs_noisy"]["test"][2] > 0.05
    assert by["single_semseg"]["test"] is None
    trivial = by["trivial (constant)"]
    assert trivial["delta"] == pytest.approx(50 * ((0.1 - 0.5) / 0.5 - (2.0 - 1.0) / 1.0))


def test_pareto_front():
    rows, _ = study.summarize(_content())
    front = [
        r["group"] for r in pareto.pareto_front([r for r in rows if r["kind"] != "single_task"])
    ]
    # hs_noisy has hard sharing's FLOPs and a lower mean: dominated
    assert front == ["hard_sharing", "big"]


def test_table_and_page_rebuilt_from_the_results_file(tmp_path, capsys):
    results = tmp_path / "results.json"
    study.save_results(results, _content())
    page = tmp_path / "docs" / "study.md"
    table = study.rebuild(str(results), str(page), "# A study\n\n")
    text = page.read_text()
    assert text.startswith("# A study\n\n" + study.BEGIN) and study.END in text
    assert table in text and "`python x.py`" in text and "synthetic only" in text
    assert "| big | 3 | 55.00 ± 1.00 | 0.9000 ± 0.0100 | 1.00 | 2.00 |" in table
    prose = " ".join(text.split())
    assert "Welch" in prose and "of the 2 runs tested, about 0.1 would be marked" in prose
    for name in ("delta_mtl.png", "pareto.png"):
        image = Image.open(tmp_path / "docs" / "study" / name)
        assert image.size[0] > 100 and image.size[1] > 100
    assert "(study/pareto.png)" in text

    # hand-written text around the generated part is kept; the CLI rebuilds the same page
    page.write_text(text + "Notes by hand.\n")
    assert cli.main(["compare", str(results), "--page", str(page)]) == 0
    assert page.read_text() == text + "Notes by hand.\n"
    assert table in capsys.readouterr().out


def test_results_file_errors(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        study.load_results(bad)
    bad.write_text(json.dumps({"records": 3}))
    with pytest.raises(ValueError, match="not a study results file"):
        study.load_results(bad)
    assert study.load_results(tmp_path / "missing.json") == {"study": {}, "records": []}
    empty = tmp_path / "empty.json"
    study.save_results(empty, {"study": {}, "records": []})
    with pytest.raises(ValueError, match="holds no finished run"):
        study.rebuild(str(empty), str(tmp_path / "page.md"))


def test_put_record_replaces_the_same_run():
    content = {"study": {}, "records": []}
    study.put_record(content, {"run": "a_s0", "metrics": {"x": 1}})
    study.put_record(content, {"run": "a_s0", "metrics": {"x": 2}})
    assert content["records"] == [{"run": "a_s0", "metrics": {"x": 2}}]
