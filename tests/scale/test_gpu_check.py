"""``benchmarks/gpu_check.sh --quick`` runs the script's whole logic on a CPU in seconds."""

import json
import os
import subprocess
import sys

import pytest

from tests.scale.conftest import ROOT, subprocess_env


@pytest.mark.large
def test_gpu_check_quick_prints_rates_and_ratios():
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--quick"],
        env=subprocess_env(PYTHON=sys.executable, CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = {tuple(line.split()[:2]): line for line in lines if line.startswith("tiny ")}
    assert set(rows) == {
        ("tiny", "float32"),
        ("tiny", "float32+xla"),
        ("tiny", "mixed_bfloat16"),
        ("tiny", "mixed_bfloat16+xla"),
    }
    assert "skipped (XLA:CPU" in rows[("tiny", "mixed_bfloat16+xla")]
    report = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    measured = {k: v for k, v in report["results"].items() if "images_per_s" in v}
    assert sorted(measured) == ["tiny/float32", "tiny/float32+xla", "tiny/mixed_bfloat16"]
    assert all(v["images_per_s"] > 0 and v["loss"] > 0 for v in measured.values())
    ratios = next(line for line in lines if line.startswith("ratios tiny"))
    base = measured["tiny/float32"]["images_per_s"]
    xla = measured["tiny/float32+xla"]["images_per_s"] / base
    assert f"float32+xla {xla:.2f}x" in ratios
