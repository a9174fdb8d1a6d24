"""NYUv2 with 13 classes, depth and normals in the ``.npy`` form of MTAN and LibMTL.

Layout (``<manual_dir>/nyuv2/`` or ``manual_dir`` itself), ``i`` = 0 .. N - 1 in each split
(795 train, 654 val), as distributed with MTAN (Liu et al., "End-to-End Multi-Task Learning with
Attention", CVPR 2019) and used by LibMTL, Nash-MTL, CAGrad and Auto-Lambda:

=============================  ===========================================================
``{train,val}/image/<i>.npy``   float (288, 384, 3) in [0, 1]
``{train,val}/label/<i>.npy``   float (288, 384): classes 0..12, -1 = ignore
``{train,val}/depth/<i>.npy``   float (288, 384, 1) metres, 0 = invalid
``{train,val}/normal/<i>.npy``  float (288, 384, 3) unit vectors, zero vector = invalid
=============================  ===========================================================

Decoding: the image becomes uint8 ``round(255 x)`` (the library's image convention; at most half
a grey level from the stored value), the label uint8 with -1 -> 255, depth float32 with
non-finite or non-positive values -> 0, normals float32 as stored. Example ids are
``"<split>/<i>"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mtl_keras.data.builders import _io, _tfds

NAME = "nyuv2_3task"
SPLITS = ("train", "val")
TASKS = ("semseg", "depth", "normals")
IMAGE_SIZE = (288, 384)
#: The 13 classes of Couprie et al. (ICLR 2013), labels 0..12.
SEMSEG_CLASSES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)  # fmt: skip
FOLDERS = {"image": "image", "semseg": "label", "depth": "depth", "normals": "normal"}
LAYOUT = "nyuv2/{train,val}/{image,label,depth,normal}/<i>.npy"


def find_root(manual_dir) -> Path:
    """The ``nyuv2`` folder inside ``manual_dir`` (or ``manual_dir`` itself)."""
    return _io.find_root(manual_dir, ("nyuv2", "NYUv2", "nyuv2_3task"), "train/image", NAME, LAYOUT)


def list_npy_ids(root: Path, split: str, folders, name: str) -> list[str]:
    """``"<split>/<i>"`` for ``i`` = 0 .. N - 1 (N = number of ``.npy`` files in ``image/``).

    Raises:
        DatasetFormatError: a folder or a file of some ``i`` is missing.
    """
    image_dir = _io.require_dir(root / split / folders["image"], f"the {split} images of {name}")
    count = len(list(image_dir.glob("*.npy")))
    if count == 0:
        raise _io.DatasetFormatError(
            f"{image_dir} holds no .npy file; expected {split} images 0.npy .. N-1.npy."
        )
    for key, folder in folders.items():
        _io.require_dir(root / split / folder, f"the {split} {key} arrays of {name}")
        for i in range(count):
            _io.require_file(
                root / split / folder / f"{i}.npy",
                f"{key} array {i} (image/ holds {count} files, so 0..{count - 1} must exist)",
            )
    return [f"{split}/{i}" for i in range(count)]


def list_ids(root, split: str) -> list[str]:
    """Ids ``"<split>/<i>"`` of ``split``, after checking every file."""
    if split not in SPLITS:
        raise ValueError(f"{NAME}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return list_npy_ids(Path(root), split, FOLDERS, NAME)


def decode_unit_image(array: np.ndarray, path) -> np.ndarray:
    """A float (H, W, 3) image in [0, 1] -> uint8 ``round(255 x)`` (values clipped to [0, 1])."""
    _io.check_shape(array, (None, None, 3), path, "an image")
    if array.dtype == np.uint8:
        return array
    if not np.isfinite(array).all():
        raise _io.DatasetFormatError(f"{path} has non-finite pixels; expected values in [0, 1].")
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def decode_class_map(array: np.ndarray, num_classes: int, path) -> np.ndarray:
    """A float (H, W) map with classes 0..C-1 and -1 = ignore -> uint8 (H, W, 1), ignore 255."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    _io.check_shape(array, (None, None), path, "a class map")
    valid = (array == np.round(array)) & (array >= -1) & (array < num_classes)
    if not valid.all():
        raise _io.DatasetFormatError(
            f"{path} holds {float(array[~valid].reshape(-1)[0])}; expected integers "
            f"0..{num_classes - 1} or -1 (ignore)."
        )
    return np.where(array < 0, 255, array).astype(np.uint8)[..., None]


def read_example(root, example_id: str) -> dict[str, np.ndarray]:
    """Decode example ``"<split>/<i>"``: ``image`` uint8, ``semseg``, ``depth`` and ``normals``.

    Raises:
        DatasetFormatError: a file is missing, corrupt or of the wrong shape or values.
    """
    root = Path(root)
    split, index = example_id.split("/")
    path = {key: root / split / folder / f"{index}.npy" for key, folder in FOLDERS.items()}
    image = decode_unit_image(_io.read_npy(path["image"], "an image (H, W, 3)"), path["image"])
    size = image.shape[:2]
    label = _io.read_npy(path["semseg"], "a class map (H, W)")
    semseg = decode_class_map(label, len(SEMSEG_CLASSES), path["semseg"])
    depth = _io.read_npy(path["depth"], "a depth map (H, W, 1)")
    if depth.ndim == 2:
        depth = depth[..., None]
    _io.check_shape(depth, (None, None, 1), path["depth"], "a depth map")
    normals = _io.read_npy(path["normals"], "a normal map (H, W, 3)")
    _io.check_shape(normals, (None, None, 3), path["normals"], "a normal map")
    normals = np.where(np.isfinite(normals), normals, 0.0).astype(np.float32)
    for key, array in (("semseg", semseg), ("depth", depth), ("normals", normals)):
        if array.shape[:2] != size:
            raise _io.DatasetFormatError(
                f"{path[key]} is {array.shape[:2]} but its image is {size}; expected equal sizes."
            )
    return {
        "id": example_id,
        "image": image,
        "semseg": semseg,
        "depth": _io.clean_depth(depth),
        "normals": normals,
    }


class Nyuv23Task(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the MTAN NYUv2 arrays (see the module docstring)."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MTAN/LibMTL .npy layout, 13 classes."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the pre-processed NYUv2 folder linked from the MTAN README "
        f"(github.com/lorenmt/mtan), extract it and pass its parent as manual_dir. Expected "
        f"layout: {LAYOUT}."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=_tfds.features(TASKS),
            homepage="https://github.com/lorenmt/mtan",
            citation="Liu et al., End-to-End Multi-Task Learning with Attention, CVPR 2019.",
        )

    def _split_generators(self, dl_manager):
        root = find_root(dl_manager.manual_dir)
        return {_tfds.SPLIT_NAMES[split]: self._generate_examples(root, split) for split in SPLITS}

    def _generate_examples(self, root, split):
        return _tfds.generate(root, list_ids(root, split), read_example, TASKS)
