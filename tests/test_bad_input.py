"""Every bad input is refused up front with one line that names it and the fix."""

import errno
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import architectures, balancing, recipes, tasks
from mtl_keras.architectures import WeightsMismatchError, build_single_task, load_weights_file
from mtl_keras.cli import EXIT_FILE, EXIT_REFUSED, _file_error, main
from mtl_keras.data import synthetic_task_options
from mtl_keras.export import export_saved_model
from mtl_keras.training.building import build_model, task_specs
from mtl_keras.training.recipe import Recipe
from tests.utils import tiny_arrays, tiny_specs

#: the command line's tiny demo: 32 px, 8 training scenes, batch 4, ResNet-18 of width 8
TINY = [
    *("--set", "image_size=[32,32]", "--set", "train_examples=8", "--set", "val_examples=4"),
    *("--set", "batch_size=4", "--set", 'backbone_kwargs={"width":8}'),
    *("--set", "tasks=semseg,depth"),
]
SMALL = {"tasks": ("semseg", "depth"), "image_size": (32, 32), "train_examples": 8}


# ---------------------------------------------------------------------------- recipe fields
@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("epochs", "abc", "recipe field epochs must be an integer >= 1, got 'abc' (e.g. --set"),
        ("epochs", 1.5, "epochs must be an integer >= 1, got 1.5"),
        ("epochs", 0, "epochs must be an integer >= 1, got 0"),
        ("epochs", -1, "epochs must be an integer >= 1, got -1"),
        ("epochs", True, "epochs must be an integer >= 1, got True"),
        ("steps_per_epoch", -1, "steps_per_epoch must be null (one pass"),
        ("steps_per_epoch", 0, "steps_per_epoch must be null"),
        ("batch_size", 0, "batch_size must be an integer >= 1"),
        ("batch_size", "8", "batch_size must be an integer >= 1"),
        ("learning_rate", "abc", "learning_rate must be > 0 (a finite number), got 'abc'"),
        ("learning_rate", -1e-3, "learning_rate must be > 0"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("learning_rate", math.nan, "learning_rate must be > 0"),
        ("learning_rate", math.inf, "learning_rate must be > 0"),
        ("weight_decay", -1e-4, "weight_decay must be >= 0"),
        ("poly_power", -1.0, "poly_power must be >= 0"),
        ("adversarial_weight", -1.0, "adversarial_weight must be >= 0"),
        ("adversarial_weight", math.inf, "adversarial_weight must be >= 0"),
        ("image_size", 32, "image_size must be [height, width], two integers >= 1, got 32"),
        ("image_size", (32, 0), "image_size must be [height, width]"),
        ("image_size", (32, 32, 3), "image_size must be [height, width]"),
        ("image_size", ("a", "b"), "image_size must be [height, width]"),
        ("train_examples", 0, "recipe field train_examples must be an integer >= 1, got 0"),
        ("train_examples", None, "recipe field train_examples must be an integer >= 1"),
        ("val_examples", 0, "recipe field val_examples must be an integer >= 1, got 0"),
        ("train_examples", 1, "train_examples=1 is smaller than batch_size=8"),
        ("seed", "abc", "seed must be an integer in [0, 2**32), got 'abc'"),
        ("seed", -1, "seed must be an integer in [0, 2**32)"),
        ("seed", 1.5, "seed must be an integer"),
        ("data_seed", "abc", "data_seed must be an integer"),
        ("deterministic", "yes", "deterministic must be true or false"),
        ("jit_compile", "maybe", 'jit_compile must be "auto", true or false'),
        ("worker_timeout", 0, "worker_timeout must be > 0"),
        ("export_version", -1, "export_version must be null or an integer >= 1"),
        ("image_summaries", -1, "image_summaries must be an integer >= 0"),
        ("name", "", "name must be a non-empty string"),
        ("backbone_kwargs", [8], "backbone_kwargs must be a dict"),
        ("tasks", "semseg", "tasks must be a list of task names"),
        ("tasks", (), "tasks must be a list of at least one task name"),
        ("tasks", ("semseg", "semseg"), "tasks lists ['semseg'] more than once"),
        ("auxiliary_weights", {"edges": -1.0}, "auxiliary_weights['edges'] must be >= 0"),
        ("auxiliary_weights", {"edges": math.nan}, "auxiliary_weights['edges'] must be >= 0"),
        (
            "balancer_kwargs",
            {"weights": {"semseg": -1.0}},
            "balancer_kwargs['weights']['semseg'] must be >= 0",
        ),
        ("balancer_kwargs", {"weights": [1.0, math.inf]}, "balancer_kwargs['weights'][1] must"),
        ("balancer_kwargs", {"weights": 2.0}, "balancer_kwargs['weights'] must be a list"),
    ],
)
def test_recipe_field_refused(field, value, fragment):
    with pytest.raises(ValueError) as caught:
        Recipe(**{"name": "bad", **SMALL, field: value})
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_recipe_fields_of_a_real_dataset_may_be_null_and_good_values_pass():
    assert Recipe(name="real", dataset="nyud", train_examples=None).train_examples is None
    good = {**SMALL, "image_size": [32, 48], "epochs": np.int64(2), "learning_rate": 1}
    recipe = Recipe(name="ok", **good)
    assert recipe.image_size == (32, 48) and recipe.tasks == ("semseg", "depth")
    with pytest.raises(ValueError, match="steps_per_epoch must be null"):
        recipe.with_overrides(["steps_per_epoch=-1"])  # overrides are checked too


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("epochs=abc", "recipe field epochs must be an integer >= 1, got 'abc' (e.g. --set "),
        ("epochs=1.5", "epochs must be an integer >= 1, got 1.5"),
        ("epochs=0", "epochs must be an integer >= 1, got 0"),
        ("steps_per_epoch=-1", "steps_per_epoch must be null"),
        ("learning_rate=abc", "learning_rate must be > 0 (a finite number), got 'abc'"),
        ("learning_rate=-0.1", "learning_rate must be > 0"),
        ("weight_decay=-1", "weight_decay must be >= 0"),
        ("seed=abc", "seed must be an integer in [0, 2**32), got 'abc'"),
        ("image_size=32", "image_size must be [height, width], two integers >= 1, got 32"),
        ("val_examples=0", "recipe field val_examples must be an integer >= 1, got 0"),
        ("train_examples=0", "recipe field train_examples must be an integer >= 1, got 0"),
        ("batch_size=true", "batch_size must be an integer >= 1 (the global batch"),
        ('balancer_kwargs={"weights":{"semseg":-1}}', "['weights']['semseg'] must be >= 0"),
    ],
)
def test_recipe_field_refused_by_the_command_line(setting, fragment, capsys):
    assert main(["train", "--recipe", "demo", "--set", setting]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["export", "--recipe", "demo", "--version", "-1"], "argument --version: must be an"),
        (["export", "--recipe", "demo", "--version", "0"], "argument --version: must be an"),
        (["preview", "--n", "0"], "argument --n: must be an integer >= 1, got '0'"),
        (["preview", "--image-size", "0", "32"], "argument --image-size: must be an integer"),
        (["preview", "--seed", "-1"], "argument --seed: must be an integer >= 0"),
    ],
)
def test_argument_refused(argv, fragment, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_REFUSED
    assert fragment in capsys.readouterr().err


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights file of the TINY demo (untrained), and a corrupt, an empty, a truncated one."""
    root = tmp_path_factory.mktemp("weights")
    recipe = recipes.get("demo").with_overrides(TINY[1::2])
    model = build_model(recipe, task_specs(recipe, synthetic_task_options()), steps=1)
    good = root / "good.weights.h5"
    model.save_weights(str(good))
    data = good.read_bytes()
    (root / "empty.weights.h5").write_bytes(b"")
    (root / "junk.weights.h5").write_bytes(b"not an HDF5 file")
    (root / "truncated.weights.h5").write_bytes(data[: len(data) // 2])
    (root / "a_file").write_text("in the way")
    return root


@pytest.mark.parametrize(
    "command, name, fragment",
    [
        ("evaluate", "empty.weights.h5", "is not a readable .weights.h5 file (Unable to"),
        ("evaluate", "junk.weights.h5", "it is empty, truncated or of another format"),
        ("evaluate", "truncated.weights.h5", "(truncated file"),
        ("evaluate", ".", "Is a directory; a folder stands where a file is expected"),
        ("evaluate", "missing.weights.h5", "no weights at"),
        ("export", "truncated.weights.h5", "(truncated file"),
        ("export", "missing.weights.h5", "no weights at"),
    ],
)
def test_unreadable_weights(weights, command, name, fragment, capsys):
    path = str(weights / name)
    assert main([command, "--recipe", "demo", *TINY, "--weights", path]) == EXIT_FILE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1
    assert os.path.normpath(path) in err


def test_weights_of_another_width_name_the_variable(weights, capsys):
    wider = [*TINY[:-4], "--set", 'backbone_kwargs={"width":4}', *TINY[-2:]]
    good = str(weights / "good.weights.h5")
    assert main(["evaluate", "--recipe", "demo", *wider, "--weights", good]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.startswith(f"error: {good} holds the weights of a model with other shapes: ")
    assert (
        "the first, variable stem_conv/kernel, is (7, 7, 3, 8) in the file and (7, 7, 3, 4)" in err
    )
    assert len(err) < 600


def test_export_into_a_file_and_a_full_disk(weights, monkeypatch, capsys):
    good = str(weights / "good.weights.h5")
    export = ["export", "--recipe", "demo", *TINY, "--weights", good]
    in_the_way = str(weights / "a_file")
    assert main([*export, "--export-dir", in_the_way]) == EXIT_FILE
    err = capsys.readouterr().err
    assert f"error: {in_the_way}" in err and "a file stands where a folder is expected" in err

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "saved_models/demo/.tmp-1")

    monkeypatch.setattr("mtl_keras.export.export_saved_model", full)
    assert main([*export, "--export-dir", str(weights / "exports")]) == EXIT_FILE
    err = capsys.readouterr().err
    assert err == (
        "error: saved_models/demo/.tmp-1: No space left on device; the disk is full: free space "
        "or write elsewhere (--out, --export-dir, --set run_dir=...)\n"
    )
    with pytest.raises(OSError):  # --debug: the traceback
        main(["--debug", *export, "--export-dir", str(weights / "exports")])


@pytest.mark.parametrize(
    "code, fragment",
    [
        (errno.EACCES, "/r/x: Permission denied; no permission: choose another path"),
        (errno.EROFS, "/r/x: Read-only file system; a read-only file system: write elsewhere"),
        (errno.ENOSPC, "/r/x: No space left on device; the disk is full"),
        (errno.ENOTDIR, "/r/x: Not a directory; a file stands where a folder is expected"),
        (errno.EISDIR, "/r/x: Is a directory; a folder stands where a file is expected"),
    ],
)
def test_file_errors_name_path_problem_and_fix(code, fragment):
    assert _file_error(OSError(code, os.strerror(code), "/r/x")).startswith(fragment)


# ---------------------------------------------------------------------------- export mode
def test_export_folder_gets_the_umask_mode(tmp_path):
    keras.utils.set_random_seed(0)
    specs = tiny_specs(("semseg",))
    network = build_single_task(
        specs["semseg"],
        backbone="resnet10",
        backbone_kwargs={"width": 8},
        head="conv",
        head_kwargs={"filters": 8, "num_convs": 1},
        image_size=(32, 32),
    )
    with pytest.raises(ValueError, match="export version must be an integer >= 1"):
        export_saved_model(network, specs, str(tmp_path), "m", image_size=(32, 32), version=-1)
    old = os.umask(0o027)
    try:
        path = export_saved_model(network, specs, str(tmp_path), "m", image_size=(32, 32))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o750  # not mkdtemp's 0o700
    assert os.listdir(tmp_path / "m") == ["1"]


# ---------------------------------------------------------------------------- weights files
def _single(width: int) -> keras.Model:
    return build_single_task(
        tiny_specs(("semseg",))["semseg"],
        backbone="resnet10",
        backbone_kwargs={"width": width},
        head="conv",
        head_kwargs={"filters": 8, "num_convs": 1},
        image_size=(32, 32),
    )


def test_single_task_checkpoint_of_another_width(tmp_path):
    path = str(tmp_path / "semseg.weights.h5")
    _single(8).save_weights(path)
    with pytest.raises(WeightsMismatchError) as caught:
        load_weights_file(_single(16), path)
    assert (caught.value.variable, caught.value.file_shape) == ("stem_conv/kernel", "(7, 7, 3, 8)")
    assert caught.value.model_shape == "(7, 7, 3, 16)" and len(str(caught.value)) < 600
    with pytest.raises(WeightsMismatchError, match=r"stem_conv/kernel, is \(7, 7, 3, 8\)"):
        architectures.load_single_task_networks(
            tiny_specs(("semseg",)),
            {"semseg": path},
            backbone="resnet10",
            backbone_kwargs={"width": 16},
            head="conv",
            head_kwargs={"filters": 8, "num_convs": 1},
            image_size=(32, 32),
        )


# ---------------------------------------------------------------------------- architectures
def test_single_task_with_three_tasks_names_them():
    specs = list(tiny_specs(("semseg", "depth", "normals")).values())
    with pytest.raises(ValueError) as caught:
        architectures.build("single_task", specs)
    message = str(caught.value)
    assert "got 3: ['semseg', 'depth', 'normals']" in message and "TaskSpec(" not in message


# ---------------------------------------------------------------------------- aggregate
@pytest.mark.parametrize("method", ["mgda", "pcgrad", "graddrop", "upgrad"])
@pytest.mark.parametrize(
    "jacobian, error, fragment",
    [
        ([[1.0, math.nan], [0.0, 1.0]], ValueError, "NaN or inf entries; check the task losses"),
        ([[1.0, 0.0], [math.inf, 1.0]], ValueError, "non-finite rows: ['task_1']"),
        ([[1, 0], [0, 1]], TypeError, "floating-point (T, P) Jacobian, got int32"),
        ([1.0, 2.0], ValueError, "a (T, P) Jacobian (T tasks, P parameters), got shape (2,)"),
        ([[[1.0, 2.0]]], ValueError, "a (T, P) Jacobian (T tasks, P parameters)"),
    ],
)
def test_aggregate_refuses(method, jacobian, error, fragment):
    with pytest.raises(error) as caught:
        balancing.get(method).aggregate(jacobian)
    assert fragment in str(caught.value)


def test_aggregate_in_a_graph_asserts_finite():
    balancer = balancing.get("mgda")
    balancer.aggregate(tf.eye(2))
    step = tf.function(balancer.aggregate, jit_compile=False)
    np.testing.assert_allclose(step(tf.eye(2)).numpy(), [0.5, 0.5], atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or inf entries"):
        step(tf.constant([[1.0, math.nan], [0.0, 1.0]]))


# ---------------------------------------------------------------------------- labels
def _class_map(*ids):
    return np.array(ids, np.uint8).reshape(1, 1, len(ids), 1)


@pytest.mark.parametrize(
    "task, options, label, fragment",
    [
        ("semseg", {"num_classes": 40}, _class_map(0, 39, 45, 255), "class id(s) 45 at 1 pixel"),
        ("semseg", {"num_classes": 40}, _class_map(40, 41, 40), "class id(s) 40, 41 at 3"),
        ("semseg", {"num_classes": 5}, _class_map(7), '"num_classes": 8'),
        ("human_parts", {}, _class_map(0, 6, 7), "human_parts': the label holds class id(s) 7"),
        ("human_parts", {}, np.full((2, 2, 2), 3, np.uint8), "got shape (2, 2, 2)"),
        ("depth", {}, np.array([[[[1.0], [math.nan]]]], np.float32), "1 NaN or inf value(s)"),
        ("normals", {}, np.zeros((1, 2, 2, 1), np.float32), "(B, H, W, 3), got shape"),
    ],
)
def test_label_refused(task, options, label, fragment):
    with pytest.raises(ValueError) as caught:
        tasks.get(task, **options).check_label(label)
    assert fragment in str(caught.value)


def test_labels_in_range_pass_and_symbolic_labels_are_refused():
    spec = tasks.get("semseg", num_classes=40)
    spec.check_label(_class_map(0, 39, 255))
    spec.check_label(tf.constant(_class_map(3)))
    for name, each in tiny_specs().items():  # the synthetic scenes' labels
        each.check_label(tiny_arrays((name,), n=2)[name])
    with pytest.raises(TypeError, match="concrete labels"):
        tf.function(spec.check_label)(tf.constant(_class_map(3)))


@pytest.mark.parametrize(
    "task, label, valid",
    [
        ("semseg", _class_map(0, 255, 3, 255), 2),
        ("human_parts", _class_map(255, 255), 0),
        ("depth", np.array([0.0, 2.0, 0.0, 5.0], np.float32).reshape(1, 1, 4, 1), 2),
        ("normals", np.array([[[[0, 0, 0], [0, 0, 1], [0, 0, 0]]]], np.float32), 1),
        ("edges", np.array([0, 1, 255], np.float32).reshape(1, 1, 3, 1), 2),
        ("saliency", np.full((2, 2, 2, 1), 255, np.float32), 0),
    ],
)
def test_valid_pixel_count(task, label, valid):
    spec = tiny_specs((task,))[task]
    assert int(spec.count_valid_pixels(label)) == valid
    assert int(tf.function(spec.count_valid_pixels)(tf.constant(label))) == valid
