"""``mtl-keras evaluate --protocol NAME``: protocol.json from the command line, checked against
calling `mtl_keras.evaluation.protocol` directly on the same network and examples."""

import contextlib
import io
import json
import re

import numpy as np
import pytest

from mtl_keras import data, recipes
from mtl_keras.architectures import load_weights_file
from mtl_keras.cli import PROTOCOL_NAMES, main
from mtl_keras.data import SyntheticScenes, real, synthetic_task_options
from mtl_keras.evaluation import protocol
from mtl_keras.training.building import build_model, load_data, task_specs
from tests.data_real import fakes
from tests.evaluation.test_protocol import _examples, _specs, constant_network

SIZE = (32, 32)
TASKS = ("semseg", "depth", "edges", "saliency")
TINY = [
    "image_size=[32,32]",
    "train_examples=4",
    "val_examples=3",
    "batch_size=4",
    "epochs=1",
    'backbone_kwargs={"width":8}',
    "image_summaries=0",
    f"tasks={','.join(TASKS)}",
]


def _sets(assignments):
    return [a for item in assignments for a in ("--set", item)]


def _recipe(assignments):
    return recipes.get("demo").with_overrides(assignments)


def _network(recipe, options):
    """The recipe's network with its run's weights, built here as `build_model` builds it."""
    specs = task_specs(recipe, options)
    model = build_model(recipe, specs, steps=1)
    load_weights_file(model, f"{recipe.output_dir}/checkpoints/last.weights.h5")
    return model.network, specs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run of ``demo`` on the synthetic scenes: ``(assignments, run folder)``."""
    root = tmp_path_factory.mktemp("protocol_cli")
    sets = [*TINY, f"run_dir={root / 'runs'}"]
    assert main(["train", "--recipe", "demo", "--quiet", "--no-export", *_sets(sets)]) == 0
    return sets, root / "runs" / "demo"


@pytest.fixture(scope="module")
def survey(trained):
    """``evaluate --protocol survey`` on the trained run: (its stdout, protocol.json)."""
    sets, folder = trained
    out = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", "--recipe", "demo", *_sets(sets), "--protocol", "survey"]) == 0
    return out.getvalue(), json.loads((folder / "protocol.json").read_text())


def _val_examples(n):
    """The synthetic validation examples at their resolution, rendered one by one here."""
    scenes = SyntheticScenes(image_size=SIZE, seed=0)
    return [{k: v for k, v in scenes.example(i, "val").items() if k in ("image", *TASKS)}
            for i in range(n)]  # fmt: skip


def _table_row(stdout, task, key):
    """``(model, baseline)`` of one row of the printed table."""
    match = re.search(rf"^{task}\s+{key}\s+(\S+)\s+(\S+)", stdout, re.M)
    assert match, stdout
    return float(match[1]), float(match[2])


def test_protocol_names_are_the_protocols():
    assert PROTOCOL_NAMES == tuple(protocol.PROTOCOLS)


# --- (a) survey on a trained synthetic run ---------------------------------------------------


def test_survey_protocol_json_equals_calling_the_protocol(trained, survey):
    sets, folder = trained
    stdout, content = survey
    assert content["task"] == "demo"
    assert content["protocol"]["name"] == "survey"
    assert content["protocol"]["dataset"] == "synthetic"
    assert content["protocol"]["edge_max_dist"] == 0.0075
    assert content["protocol"]["edge_thresholds"] == 99
    assert content["counts"] == {"images": 3}  # the recipe's val_examples
    network, specs = _network(_recipe(sets), synthetic_task_options())
    examples = _val_examples(3)
    want = protocol.evaluate(
        network, examples, specs, image_size=SIZE, protocol="survey", dataset="synthetic"
    )
    assert content["metrics"] == want
    resolved = protocol.get_protocol("survey", "synthetic")
    for spec in specs.values():  # every task's primary metric under the protocol
        assert spec.metric_id(spec.evaluation_primary(resolved)[0]) in content["metrics"]
    # protocol metrics, not the training ones: odsF of the edge benchmark is only here
    training = json.loads((folder / "results.json").read_text())
    assert "edges_ods_f" in content["metrics"] and "edges_ods_f" not in training["metrics"]
    assert content["params"] > 0 and content["flops"] > 0
    # the printed table: the model's and the trivial baseline's values under the protocol
    model, base = _table_row(stdout, "edges", "ods_f")
    assert model == pytest.approx(content["metrics"]["edges_ods_f"], abs=5e-5)
    assert base == pytest.approx(content["trivial_baseline"]["edges_ods_f"], abs=5e-5)
    assert "Protocol 'survey' on synthetic (3 validation images" in stdout


def test_trivial_row_is_scored_under_the_protocol(trained, survey):
    sets, _ = trained
    _, content = survey
    trivial = content["trivial_baseline"]
    assert set(trivial) == set(content["metrics"])  # the protocol's metric ids
    specs = task_specs(_recipe(sets), synthetic_task_options())
    scenes = SyntheticScenes(image_size=SIZE, seed=0)
    train_labels = scenes.arrays("train", 4, TASKS)  # load_synthetic's sample: min(4, 256)
    want = protocol.trivial_baseline(
        specs, train_labels, _val_examples(3), image_size=SIZE, protocol="survey",
        dataset="synthetic",
    )  # fmt: skip
    assert trivial == want
    # the best constant predicts all edges: recall 1 at every threshold, precision = edge rate
    assert 0.0 < trivial["edges_ods_f"] < 1.0


def test_trivial_baseline_by_hand():
    # majority class 2 and mean valid depth 1.5 on the training labels
    train = {
        "semseg": np.array([2, 2, 2, 0, 1, 255], np.uint8).reshape(1, 2, 3, 1),
        "depth": np.array([1.0, 2.0, 0.0, 1.0, 2.0, 0.0], np.float32).reshape(1, 2, 3, 1),
    }
    specs = {t: s for t, s in _specs().items() if t in train}
    examples = _examples()
    for name in PROTOCOL_NAMES:
        scores = protocol.trivial_baseline(specs, train, examples, image_size=(4, 4), protocol=name)
        sem = np.concatenate([e["semseg"].ravel() for e in examples])
        # class 2 everywhere: IoU_2 = n_2 / N, classes 0 and 1 score 0
        assert scores["semseg_miou"] == pytest.approx(np.mean(sem == 2) / 3, rel=1e-6)
        gt = np.concatenate([e["depth"].ravel() for e in examples])
        rmse = np.sqrt(np.mean((gt[gt > 0] - 1.5) ** 2))
        assert scores["depth_rmse"] == pytest.approx(rmse, rel=1e-5)


def test_evaluate_to_file_records_the_trivial_row_of_the_same_pass(tmp_path):
    specs = _specs()
    train = {t: np.stack([e[t] for e in _examples()[:1]]) for t in specs}
    path = tmp_path / "protocol.json"
    options = {"image_size": (4, 4), "protocol": "invpt"}
    out = protocol.evaluate_to_file(
        constant_network(), _examples(), specs, path, name="x", trivial_labels=train, **options
    )
    content = json.loads(path.read_text())
    want = protocol.trivial_baseline(specs, train, _examples(), **options)
    assert content["trivial_baseline"] == out["trivial_baseline"] == want
    assert content["metrics"] == protocol.evaluate(
        constant_network(), _examples(), specs, **options
    )
    assert "saliency_max_f" in want and want != content["metrics"]


# --- (c) compare reads protocol.json ------------------------------------------------------------


def test_compare_shows_the_protocols_primary_metric(trained, survey, capsys):
    _, folder = trained
    _, content = survey
    capsys.readouterr()
    assert main(["compare", str(folder), "--trivial"]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert "edges ods_f (%) ↑" in header and "saliency miou (%) ↑" in header
    assert "edges f (%)" not in header  # not the training proxy
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    run, floor = rows[0], rows[-1]
    assert f"{100 * content['metrics']['edges_ods_f']:.2f}" in run
    assert "trivial" in floor and f"{100 * content['trivial_baseline']['edges_ods_f']:.2f}" in floor


def test_invpt_on_synthetic_with_max_examples_and_baselines(trained, survey, tmp_path, capsys):
    sets, folder = trained
    out = tmp_path / "invpt" / "protocol.json"
    args = ["evaluate", "--recipe", "demo", *_sets(sets), "--protocol", "invpt"]
    assert main([*args, "--max-examples", "2", "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    assert first["protocol"]["name"] == "invpt" and first["protocol"]["edge_thresholds"] == 101
    assert first["protocol"]["edge_max_dist"] == 0.0075  # not NYUD-v2
    assert first["counts"] == {"images": 2}
    assert (folder / "protocol.json").is_file()  # the survey's file is left as it was
    # Δ_MTL against itself under the same protocol is 0
    again = tmp_path / "again.json"
    assert main([*args, "--max-examples", "2", "--baselines", str(out), "--out", str(again)]) == 0
    assert json.loads(again.read_text())["delta_mtl"] == pytest.approx(0.0, abs=1e-9)
    capsys.readouterr()
    assert main(["compare", str(out.parent)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "saliency max_f (%) ↑" in header and "edges ods_f (%) ↑" in header


# --- (b) invpt on a fake NYUD-v2 recipe ---------------------------------------------------------


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    """A fake NYUD-v2 archive and a recipe on it whose (untrained) weights are in its run
    folder: ``(assignments, run folder)``."""
    root = tmp_path_factory.mktemp("protocol_nyud")
    fakes.write_nyud(root / "manual", variant="png")
    sets = [
        "dataset=nyud", f"data_dir={root / 'tfds'}", f"manual_dir={root / 'manual'}",
        "tasks=semseg,edges", "image_size=[32,32]", "train_examples=2", "val_examples=2",
        "batch_size=2", 'backbone_kwargs={"width":8}', "augment=false", f"run_dir={root / 'runs'}",
    ]  # fmt: skip
    recipe = _recipe(sets)
    bundle = load_data(recipe)
    model = build_model(recipe, task_specs(recipe, bundle.task_options), steps=1)
    (root / "runs" / "demo" / "checkpoints").mkdir(parents=True)
    model.save_weights(str(root / "runs" / "demo" / "checkpoints" / "last.weights.h5"))
    return sets, root / "runs" / "demo"


def test_invpt_on_nyud_uses_its_edge_tolerance(nyud, capsys):
    sets, folder = nyud
    assert main(["evaluate", "--recipe", "demo", *_sets(sets), "--protocol", "invpt"]) == 0
    content = json.loads((folder / "protocol.json").read_text())
    record = content["protocol"]
    assert record["name"] == "invpt" and record["dataset"] == "nyud"
    assert record["edge_max_dist"] == 0.011 and record["edge_thresholds"] == 101
    assert record["image_size"] == list(SIZE)
    assert content["counts"] == {"images": 2}
    recipe = _recipe(sets)
    network, specs = _network(recipe, real.task_options("nyud"))
    assert specs["semseg"].num_classes == 40
    examples = real.load_examples(
        "nyud", "val", tasks=("semseg", "edges"), data_dir=recipe.data_dir
    )
    want = protocol.evaluate(
        network, examples, specs, image_size=SIZE, protocol="invpt", dataset="nyud"
    )
    assert content["metrics"] == want
    # the survey's protocol on the same recipe keeps 0.0075
    survey_file = folder / "survey.json"
    args = ["evaluate", "--recipe", "demo", *_sets(sets), "--protocol", "survey"]
    assert main([*args, "--out", str(survey_file)]) == 0
    assert json.loads(survey_file.read_text())["protocol"]["edge_max_dist"] == 0.0075
    capsys.readouterr()
    assert main(["compare", str(folder)]) == 0
    assert "edges ods_f (%) ↑" in capsys.readouterr().out.splitlines()[0]


# --- (d) errors -------------------------------------------------------------------------------


def test_unknown_protocol_is_an_argparse_choice_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--recipe", "demo", "--protocol", "bsds"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--protocol: invalid choice: 'bsds'" in err and "survey" in err and "invpt" in err


def test_max_examples_must_be_positive_and_needs_protocol(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--recipe", "demo", "--protocol", "survey", "--max-examples", "0"])
    assert "--max-examples: must be an integer >= 1" in capsys.readouterr().err
    sets = _sets([*TINY, f"run_dir={tmp_path}"])
    assert main(["evaluate", "--recipe", "demo", *sets, "--max-examples", "2"]) == 2
    assert "--max-examples needs --protocol" in capsys.readouterr().err


def test_dataset_without_original_resolution_labels(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(data.DATASETS, "scenes_at_size", data.load_synthetic)
    sets = _sets([*TINY, "dataset=scenes_at_size", f"run_dir={tmp_path}"])
    # refused before the weights are looked for (there are none in tmp_path)
    assert main(["evaluate", "--recipe", "demo", *sets, "--protocol", "survey"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'scenes_at_size' has no original-resolution labels" in err
    assert "evaluate without --protocol" in err and "nyud" in err and "no weights" not in err


def test_baselines_without_the_protocols_metric(trained, capsys):
    sets, folder = trained
    training = folder / "results.json"  # in-training metrics: no edges_ods_f
    args = ["evaluate", "--recipe", "demo", *_sets(sets), "--protocol", "survey"]
    assert main([*args, "--baselines", str(training)]) == 2
    err = capsys.readouterr().err
    assert "has no 'edges_ods_f'" in err and "under protocol 'survey'" in err
    assert "mtl-keras evaluate --protocol survey" in err
