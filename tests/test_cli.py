"""End to end through the command line on a tiny recipe."""

import json
import os
import subprocess
import sys

import pytest

import mtl_keras
from mtl_keras.cli import LIST_KINDS, main

TINY = [
    "--set",
    "image_size=[32,32]",
    "--set",
    "train_examples=8",
    "--set",
    "val_examples=4",
    "--set",
    "batch_size=4",
    "--set",
    "epochs=1",
    "--set",
    'backbone_kwargs={"width":8}',
    "--set",
    "image_summaries=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "--recipe", "demo", "--quiet", *TINY]) == 0
        yield root
    finally:
        os.chdir(cwd)


def test_train_writes_results_logs_checkpoint_export(trained):
    run = trained / "runs" / "demo"
    results = json.loads((run / "results.json").read_text())
    assert "semseg_miou" in results["metrics"] and "depth_rmse" in results["trivial_baseline"]
    assert (run / "checkpoints" / "last.weights.h5").exists()
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert any("images" in str(e) for e in events) and any("train" in str(e) for e in events)
    assert (trained / "saved_models" / "demo" / "1" / "saved_model.pb").exists()


def test_evaluate_and_export_from_checkpoint(trained, capsys):
    cwd = os.getcwd()
    os.chdir(trained)
    try:
        assert main(["evaluate", "--recipe", "demo", *TINY]) == 0
        out = json.loads((trained / "runs" / "demo" / "eval.json").read_text())
        assert 0.0 <= out["metrics"]["semseg_miou"] <= 1.0
        assert main(["export", "--recipe", "demo", *TINY, "--version", "7"]) == 0
        assert (trained / "saved_models" / "demo" / "7" / "saved_model.pb").exists()
    finally:
        os.chdir(cwd)


def test_summary_json(capsys):
    assert (
        main(
            [
                "summary",
                "--arch",
                "hard_sharing",
                "--backbone",
                "resnet18",
                "--tasks",
                "semseg,depth",
                "--image-size",
                "32",
                "32",
                "--set",
                'backbone_kwargs={"width":8}',
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["params"] > 0 and info["non_trainable_params"] > 0 and info["flops"] > 0


def test_preview_writes_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["preview", "--out", str(out), "--n", "2", "--image-size", "32", "32"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_names_list_valid_ones(capsys):
    assert main(["train", "--recipe", "nope"]) == 2
    err = capsys.readouterr().err
    assert "valid recipes:" in err and "demo" in err
    assert main(["train", "--recipe", "demo", "--set", "balancer=nash"]) == 2
    assert "valid balancers" in capsys.readouterr().err
    assert main(["train", "--recipe", "demo", "--set", "tasks=semseg,dpeth"]) == 2
    assert "unknown task(s) ['dpeth']" in capsys.readouterr().err
    assert main(["train", "--recipe", "demo", "--set", "colour=red"]) == 2
    assert "unknown recipe field 'colour'" in capsys.readouterr().err
    assert main(["summary", "--arch", "mtan", "--set", 'architecture_kwargs={"alpha":1}']) == 2
    assert "architecture 'mtan' takes no argument(s) ['alpha']" in capsys.readouterr().err
    assert main(["train", "--recipe", "demo", "--set", "init_from_single_task=train"]) == 2
    assert "only cross_stitch, sluice, nddr_cnn can" in capsys.readouterr().err


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """``mtl-keras ARGS`` in a fresh interpreter that then reports whether TensorFlow was loaded."""
    code = (
        "import sys\nfrom mtl_keras.cli import LIST_KINDS, main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow loaded:', 'tensorflow' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["--version"]])
def test_help_does_not_import_tensorflow(args):
    out = _run_cli(*args).stdout
    assert out.strip().endswith("tensorflow loaded: False")
    assert "usage: mtl-keras" in out or f"mtl-keras {mtl_keras.__version__}" in out


def test_list_recipes_does_not_import_tensorflow():
    result = _run_cli("list", "recipes")
    assert "tensorflow loaded: False" in result.stdout
    assert "  demo  " in result.stdout and "hard sharing on synthetic scenes" in result.stdout


def test_list_hides_tensorflow_start_up_lines_and_shows_aliases():
    result = _run_cli("list", "architectures")
    assert "tensorflow loaded: True" in result.stdout
    assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr
    assert "nddr_cnn" in result.stdout and "(also: nddr)" in result.stdout
    assert "MTI-Net: multi-scale initial predictions" in result.stdout


def test_list_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in LIST_KINDS:
        assert f"{kind}:\n" in out
    assert "hrnet18" in out and "hrnet_w18" in out and "pascal_context" in out


def test_an_alias_prints_its_canonical_name(capsys):
    args = ["--tasks", "semseg", "--image-size", "32", "32", "--set", 'backbone_kwargs={"width":8}']
    assert main(["summary", "--arch", "Hard-Sharing", "--backbone", "ResNet-18", *args]) == 0
    err = capsys.readouterr().err
    assert "architecture 'Hard-Sharing' is 'hard_sharing'" in err
    assert "backbone 'ResNet-18' is 'resnet18'" in err
