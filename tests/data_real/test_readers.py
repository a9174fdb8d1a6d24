"""The plain-Python readers decode every published on-disk format value by value."""

import json

import numpy as np
import pytest
import scipy.io

from mtl_keras.data.builders import (
    DatasetFormatError,
    cityscapes_mt,
    nyud_mt,
    nyuv2_3task,
    pascal_mt,
)
from tests.data_real import fakes


def _check_examples(module, root, expected, **kwargs):
    ids = [i for split in ("train", "val") for i in module.list_ids(root, split, **kwargs)]
    assert sorted(ids) == sorted(expected)
    for example_id in ids:
        example = module.read_example(root, example_id, **kwargs)
        assert example["id"] == example_id
        for key, want in expected[example_id].items():
            got = example[key]
            assert got.dtype == want.dtype, (example_id, key, got.dtype, want.dtype)
            assert got.shape == want.shape, (example_id, key, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{key}")


@pytest.mark.parametrize("variant", ["npy", "png"])
def test_nyud_both_variants_decode_exactly(tmp_path, variant):
    expected = fakes.write_nyud(tmp_path, variant=variant)
    root = nyud_mt.find_root(tmp_path)
    assert root.name == ("NYUD_MT" if variant == "npy" else "NYUDv2")
    _check_examples(nyud_mt, root, expected)
    example = nyud_mt.read_example(root, "0001")
    assert example["semseg"][0, 0, 0] == 255 and example["semseg"][0, 1, 0] == 39  # 0, 40
    assert np.all(example["depth"][1, :3] == 0)  # zeros and NaN are invalid
    assert np.all(example["normals"][2, :3] == 0)


def test_pascal_decodes_parts_edges_normals_saliency(tmp_path):
    expected = fakes.write_pascal(tmp_path)
    root = pascal_mt.find_root(tmp_path)
    _check_examples(pascal_mt, root, expected)
    person = pascal_mt.read_example(root, "2008_000001")
    assert set(np.unique(person["human_parts"])) == {0, 1, 2, 3, 6}
    for no_parts in ("2008_000002", "2008_000003"):  # a cat only; a person without parts
        assert np.all(pascal_mt.read_example(root, no_parts)["human_parts"] == 255)
    assert person["saliency"][0, 0, 0] == 0 and person["saliency"][0, 1, 0] == 1  # 127, 128


def test_pascal_fake_matches_the_published_positional_layout(tmp_path):
    fakes.write_pascal(tmp_path)
    path = tmp_path / "PASCAL_MT" / "human_parts" / "2008_000001.mat"
    objects = scipy.io.loadmat(path)["anno"][0][0][1][0]
    person = objects[0]
    assert person[1][0][0] == 15 and person[3][0][0][0][0] == "hair"
    assert person[3][0][0][1].shape == fakes.SIZE
    assert len(objects[1][3]) == 0  # the dog has no parts


def test_label_map_edges_match_opencv_laplacian_definition():
    label_map = np.zeros((7, 9), np.uint16)
    label_map[:, 4:] = 3
    edges = pascal_mt.label_map_edges(label_map)
    np.testing.assert_array_equal(edges, fakes.laplacian_edges(label_map))
    # a straight boundary thins to a one-pixel line on one of the two boundary columns
    assert np.all(edges.sum(axis=1) <= 1) and edges.sum() >= 6
    assert set(np.nonzero(edges)[1]) <= {3, 4}
    assert pascal_mt.label_map_edges(np.full((5, 5), 7)).sum() == 0


def test_normals_valid_classes_are_the_shared_nyu_names_plus_tvmonitor():
    valid = pascal_mt.normals_valid_classes()
    assert {440, 284, 158, 427} <= valid  # wall, person, floor, tvmonitor
    assert not {360, 2, 431} & valid  # sky, aeroplane, unknown
    assert len(valid) == 170


def test_nyuv2_3task_arrays(tmp_path):
    expected = fakes.write_mtan(
        tmp_path, "nyuv2", label_folder="label", num_classes=13, normals=True
    )
    root = nyuv2_3task.find_root(tmp_path)
    _check_examples(nyuv2_3task, root, expected)
    example = nyuv2_3task.read_example(root, "train/0")
    assert example["semseg"][0, 0, 0] == 255 and example["semseg"][0, 1, 0] == 12
    np.testing.assert_array_equal(example["image"][0, 0], [0, 255, 128])


@pytest.mark.parametrize(
    "layout,folder,classes",
    [("mtan7", "label_7", 7), ("mtan7", "label", 7), ("mtan19", "label_19", 19)],
)
def test_cityscapes_mtan_layouts(tmp_path, layout, folder, classes):
    expected = fakes.write_mtan(
        tmp_path, "cityscapes", label_folder=folder, num_classes=classes, normals=False
    )
    root = cityscapes_mt.find_root(tmp_path, layout)
    _check_examples(cityscapes_mt, root, expected, layout=layout)


def test_cityscapes_official_train_ids_and_metric_depth(tmp_path):
    expected = fakes.write_cityscapes_official(tmp_path)
    root = cityscapes_mt.find_root(tmp_path, "official")
    _check_examples(cityscapes_mt, root, expected, layout="official")
    example = cityscapes_mt.read_example(root, "train/aachen/aachen_000000_000019", "official")
    np.testing.assert_array_equal(example["semseg"][0, :3, 0], [255, 0, 18])  # ids 0, 7, 33
    depth = example["depth"][1, :3, 0]
    assert depth[0] == 0 and depth[1] == 0  # p = 0 (invalid) and p = 1 (zero disparity)
    np.testing.assert_allclose(depth[2], 0.209313 * 2262.52 / (65534 / 256), rtol=1e-6)


# ----------------------------------------------------------------------------------- errors
def test_missing_folder_names_the_path_and_layout(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist.*NYUD_MT"):
        nyud_mt.find_root(tmp_path / "nowhere")
    with pytest.raises(DatasetFormatError, match="no dataset root.*gt_sets"):
        nyud_mt.find_root(tmp_path)


def test_file_listed_in_split_but_missing(tmp_path):
    fakes.write_nyud(tmp_path)
    root = nyud_mt.find_root(tmp_path)
    (root / "depth" / "0002.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"missing file .*depth/0002\.npy.*depth map"):
        nyud_mt.list_ids(root, "train")


def test_mtan_gap_in_indices(tmp_path):
    fakes.write_mtan(tmp_path, "nyuv2", label_folder="label", num_classes=13, normals=True)
    root = nyuv2_3task.find_root(tmp_path)
    (root / "train" / "label" / "1.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"label/1\.npy.*0\.\.2 must exist"):
        nyuv2_3task.list_ids(root, "train")


@pytest.mark.parametrize(
    "relative,what",
    [
        ("images/0001.jpg", "RGB image"),
        ("edge/0001.npy", "binary edge map"),
        ("segmentation/0001.png", "label PNG"),
    ],
)
def test_corrupt_files_name_the_path_and_the_format(tmp_path, relative, what):
    fakes.write_nyud(tmp_path)
    root = nyud_mt.find_root(tmp_path)
    path = root / relative
    path.write_bytes(path.read_bytes()[:20])  # truncated
    with pytest.raises(DatasetFormatError, match=f"cannot decode .*{relative}.*{what}"):
        nyud_mt.read_example(root, "0001")


def test_corrupt_mat_and_wrong_struct(tmp_path):
    fakes.write_pascal(tmp_path)
    root = pascal_mt.find_root(tmp_path)
    (root / "pascal-context" / "trainval" / "2008_000001.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetFormatError, match="cannot decode .*2008_000001.mat.*LabelMap"):
        pascal_mt.read_example(root, "2008_000001")
    scipy.io.savemat(root / "human_parts" / "2008_000002.mat", {"other": np.zeros(2)})
    with pytest.raises(DatasetFormatError, match="no variable 'anno'"):
        pascal_mt.read_example(root, "2008_000002")


def test_out_of_range_labels_are_rejected(tmp_path):
    fakes.write_mtan(tmp_path, "nyuv2", label_folder="label", num_classes=13, normals=True)
    root = nyuv2_3task.find_root(tmp_path)
    label = np.load(root / "train" / "label" / "0.npy")
    label[2, 2] = 13
    np.save(root / "train" / "label" / "0.npy", label)
    with pytest.raises(DatasetFormatError, match=r"holds 13\.0.*0\.\.12 or -1"):
        nyuv2_3task.read_example(root, "train/0")


def test_bad_camera_json(tmp_path):
    fakes.write_cityscapes_official(tmp_path)
    path = tmp_path / "camera" / "val" / "frankfurt" / "frankfurt_000002_000021_camera.json"
    path.write_text(json.dumps({"intrinsic": {"fx": 1.0}}))
    with pytest.raises(DatasetFormatError, match="extrinsic.baseline"):
        cityscapes_mt.read_example(tmp_path, "val/frankfurt/frankfurt_000002_000021", "official")


def test_unknown_split_and_layout(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'test'"):
        nyud_mt.list_ids(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown layout 'mtan3'"):
        cityscapes_mt.find_root(tmp_path, "mtan3")
