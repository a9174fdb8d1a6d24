"""The package as a user gets it: its declared packages, its version, a fresh `pip install .`."""

import glob
import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

import mtl_keras

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> set[str]:
    """Every folder of mtl_keras/ and recipes/ as a package name (recipes/ as mtl_keras.recipes)."""
    names = set()
    for top, package in (("mtl_keras", "mtl_keras"), ("recipes", "mtl_keras.recipes")):
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            if folder.is_dir() and folder.name != "__pycache__":
                names.add(".".join([package, *folder.relative_to(ROOT / top).parts]))
    return names


def test_declared_packages_are_the_folders():
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _package_folders()


def test_version_is_the_declared_one():
    assert mtl_keras.__version__ == PYPROJECT["project"]["version"]


def _source_tree(dest: Path) -> Path:
    """The files git would commit (tracked and untracked-but-not-ignored), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.large
@pytest.mark.timeout(900)
def test_pip_install_into_a_fresh_venv_then_list_and_train(tmp_path):
    """``pip install .`` (no Makefile, no editable install) into a new venv, run outside the tree.

    The package is built and installed from the copied source tree; its dependencies come from
    this test environment's site-packages (a path file, listed after the new venv's own), which
    ``make install-test`` resolved from the same pyproject.toml and constraints.txt. This test's
    subject is what the package's own wheel holds: its packages, recipes, licence and command.
    """
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to copy the source tree")
    source = _source_tree(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    (site,) = glob.glob(str(env_dir / "lib" / "python3*" / "site-packages"))
    # a path line only: the editable install's finder there (a .pth of its own) is not run
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(source)], check=True)

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": ""}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)

    def run(*args):
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, check=True)

    cli = str(env_dir / "bin" / "mtl-keras")
    listed = run(cli, "list")
    assert "mtinet" in listed.stdout and "(also: nddr)" in listed.stdout
    assert "absl::InitializeLog" not in listed.stderr
    probe = run(
        python,
        "-c",
        "import importlib.util, mtl_keras, mtl_keras.recipes as r; "
        "print(mtl_keras.__version__, r.__file__, importlib.util.find_spec('recipes'))",
    )
    version, recipes_file, top_level = probe.stdout.split()
    assert version == PYPROJECT["project"]["version"]
    assert "site-packages" in recipes_file and top_level == "None"
    licence = list(
        (env_dir / "lib").glob("python3*/site-packages/mtl_keras-*.dist-info/**/LICENSE")
    )
    assert licence and "Apache License" in licence[0].read_text()

    trained = run(
        cli,
        "train",
        "--recipe",
        "demo",
        "--quiet",
        "--no-export",
        *("--set", "image_size=[32,32]", "--set", "train_examples=8", "--set", "val_examples=4"),
        *("--set", "batch_size=4", "--set", "epochs=1", "--set", 'backbone_kwargs={"width":8}'),
    )
    assert "absl::InitializeLog" not in trained.stderr
    (results,) = (work / "runs").rglob("results.json")  # wherever the run folder policy puts it
    assert "semseg_miou" in json.loads(results.read_text())["metrics"]
