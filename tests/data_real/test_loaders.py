"""The TFDS builders and ``load_*`` functions on tiny fake archives (nothing downloads)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mtl_keras.data import DataBundle, real
from mtl_keras.data.builders import DatasetFormatError
from tests.data_real import fakes

tfds.disable_progress_bar()


def _match(image, expected):
    """The expected example whose image equals ``image`` (TFDS does not keep file order)."""
    found = [k for k, v in expected.items() if np.array_equal(v["image"], image)]
    assert len(found) == 1
    return expected[found[0]]


def _check_val(bundle: DataBundle, expected, tasks):
    seen = 0
    for images, labels in bundle.val:
        for i in range(images.shape[0]):
            want = _match(images[i].numpy(), expected)
            for task in tasks:
                got = labels[task][i].numpy()
                assert got.dtype == want[task].dtype, task
                np.testing.assert_allclose(got, want[task], atol=1e-6, err_msg=task)
            seen += 1
    return seen


def test_nyud_png_variant_end_to_end(tmp_path):
    expected = fakes.write_nyud(tmp_path / "manual", variant="png")
    tasks = ("semseg", "depth", "normals", "edges")
    bundle = real.load_nyud(
        tasks, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"),
        image_size=fakes.SIZE, batch_size=2, augment=False,
    )  # fmt: skip
    assert _check_val(bundle, expected, tasks) == 2
    assert int(bundle.train.cardinality()) == 1  # 3 examples, full batches of 2
    assert bundle.task_options == {"semseg": real.task_options("nyud")["semseg"]}
    assert bundle.task_options["semseg"]["num_classes"] == 40
    assert bundle.train_labels["depth"].shape == (3, *fakes.SIZE, 1)
    builder = tfds.builder("nyud_mt", data_dir=str(tmp_path / "tfds"))
    assert set(builder.info.splits) == {"train", "validation"}
    assert set(builder.info.features) == {"id", "image", *tasks}
    examples = list(real.load_examples("nyud", "val", data_dir=str(tmp_path / "tfds")))
    assert sorted(e["id"].numpy().decode() for e in examples) == ["0004", "0005"]


def test_augmented_training_batches_keep_label_sets(tmp_path):
    fakes.write_mtan(tmp_path / "m", "nyuv2", label_folder="label", num_classes=13, normals=True)
    bundle = real.load_nyuv2_3task(
        data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "m"), image_size=(4, 6),
        batch_size=2, seed=3, shuffle_seed=1,
    )  # fmt: skip
    images, labels = next(iter(bundle.train))
    assert images.shape == (2, 4, 6, 3) and images.dtype == tf.uint8
    assert set(np.unique(labels["semseg"])) <= set(range(13)) | {255}
    norms = np.linalg.norm(labels["normals"].numpy(), axis=-1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    again = real.load_nyuv2_3task(
        data_dir=str(tmp_path / "tfds"), image_size=(4, 6), batch_size=2, seed=3, shuffle_seed=1
    )
    np.testing.assert_array_equal(next(iter(again.train))[0], images)  # reproducible


def test_pascal_end_to_end(tmp_path):
    expected = fakes.write_pascal(tmp_path / "manual")
    tasks = ("semseg", "human_parts", "normals", "edges", "saliency")
    bundle = real.load_pascal_context(
        tasks, data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"),
        image_size=fakes.SIZE, batch_size=1, augment=False,
    )  # fmt: skip
    assert _check_val(bundle, expected, tasks) == 1
    assert bundle.task_options["human_parts"]["num_classes"] == 7
    assert bundle.task_options["semseg"]["class_names"][15] == "person"


@pytest.mark.parametrize("layout", ["mtan7", "official"])
def test_cityscapes_layouts_end_to_end(tmp_path, layout):
    if layout == "official":
        expected = fakes.write_cityscapes_official(tmp_path / "manual")
    else:
        expected = fakes.write_mtan(
            tmp_path / "manual", "cityscapes", label_folder="label_7", num_classes=7,
            normals=False,
        )  # fmt: skip
    bundle = real.load_cityscapes(
        data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "manual"), layout=layout,
        image_size=fakes.SIZE, batch_size=2, augment=False,
    )  # fmt: skip
    assert _check_val(bundle, expected, ("semseg", "depth")) >= 1
    assert bundle.task_options["semseg"]["num_classes"] == (19 if layout == "official" else 7)


def test_loader_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist.*NYUD_MT"):
        real.load_nyud(data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no label for task.*saliency"):
        real.load_nyud(("saliency",), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        real.dataset_spec("kitti")


def test_registry_entries():
    registry = real.register({})
    assert set(registry) == {"nyud", "pascal_context", "nyuv2_3task", "cityscapes"}
    assert real.task_options("cityscapes", layout="mtan19")["semseg"]["num_classes"] == 19
    assert real.dataset_spec("nyud").edge_max_dist == 0.011
    assert real.dataset_spec("pascal_context").image_size == (512, 512)
