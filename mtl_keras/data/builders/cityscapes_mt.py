"""Cityscapes for segmentation and depth: the MTAN ``.npy`` form and the official layout.

**MTAN / LibMTL form** (Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019),
``<manual_dir>/cityscapes/`` or ``manual_dir`` itself, ``i`` = 0 .. N - 1 (2,975 train, 500 val):

==================================================  ==============================================
``{train,val}/image/<i>.npy``                       float (128, 256, 3) in [0, 1]
``{train,val}/label_7/<i>.npy`` (or ``label/``)     float (H, W): 7 categories 0..6, -1 = ignore
``{train,val}/label_19/<i>.npy``                    float (H, W): 19 classes 0..18, -1 = ignore
``{train,val}/depth/<i>.npy``                       float (H, W, 1): disparity, 0 = invalid
==================================================  ==============================================

The 7 categories are cityscapesScripts' categories without ``void`` (flat, construction, object,
nature, sky, human, vehicle = categoryId - 1). ``depth`` holds the dataset's *disparity* as MTAN
stores it (about 0..0.5; larger is nearer), not metres; it is kept as stored, with non-finite or
non-positive values set to 0 (invalid). Ids are ``"<split>/<i>"``.

**Official layout** (Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR 2016), ``manual_dir`` or ``<manual_dir>/cityscapes/`` holding:

=====================================================================  ==========================
``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png``    RGB, 1024 x 2048
``gtFine/<split>/<city>/<...>_gtFine_labelIds.png``                     8-bit label ids 0..33
``disparity/<split>/<city>/<...>_disparity.png``                        16-bit, d = (p - 1) / 256
``camera/<split>/<city>/<...>_camera.json``                             baseline (m) and fx (px)
=====================================================================  ==========================

Label ids become the 19 train ids of `LABEL_ID_TO_TRAIN_ID` (others 255). Depth is metric:
``depth = baseline * fx / d`` for ``p > 1`` and 0 (invalid) where ``p <= 1`` (no disparity, or
zero disparity at infinity). Ids are ``"<split>/<city>/<city>_<seq>_<frame>"``.

Builder configs: ``cityscapes_mt/mtan7`` (``label_7``, falling back to ``label``),
``cityscapes_mt/mtan19`` (``label_19``) and ``cityscapes_mt/official`` (19 classes, metres).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mtl_keras.data.builders import _io, _tfds
from mtl_keras.data.builders.nyuv2_3task import decode_class_map, decode_unit_image, list_npy_ids

NAME = "cityscapes_mt"
SPLITS = ("train", "val")
TASKS = ("semseg", "depth")
IMAGE_SIZE = (128, 256)
CATEGORY_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
#: cityscapesScripts' ``labels.py``: label id -> train id (ids not listed are ignored, 255).
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
LAYOUTS = {
    "mtan": "cityscapes/{train,val}/{image,label_7 (or label) or label_19,depth}/<i>.npy",
    "official": "{leftImg8bit,gtFine,disparity,camera}/{train,val}/<city>/<city>_<seq>_<frame>_*",
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which on-disk form to read and which labels it holds."""

    name: str
    kind: str  # "mtan" or "official"
    label_folders: tuple[str, ...]
    class_names: tuple[str, ...]
    depth_unit: str


LAYOUT_OPTIONS = {
    "mtan7": Layout("mtan7", "mtan", ("label_7", "label"), CATEGORY_CLASSES, "disparity"),
    "mtan19": Layout("mtan19", "mtan", ("label_19",), TRAIN_CLASSES, "disparity"),
    "official": Layout("official", "official", (), TRAIN_CLASSES, "metres"),
}


def _layout(layout: str) -> Layout:
    if layout not in LAYOUT_OPTIONS:
        raise ValueError(
            f"{NAME}: unknown layout {layout!r}; valid layouts: {', '.join(LAYOUT_OPTIONS)}"
        )
    return LAYOUT_OPTIONS[layout]


def find_root(manual_dir, layout: str = "mtan7") -> Path:
    """The dataset root inside ``manual_dir`` (or ``manual_dir`` itself) for ``layout``."""
    kind = _layout(layout).kind
    marker = "train/image" if kind == "mtan" else "leftImg8bit"
    folders = ("cityscapes", "cityscapes2", "Cityscapes")
    return _io.find_root(manual_dir, folders, marker, f"{NAME}/{layout}", LAYOUTS[kind])


def _label_folder(root: Path, split: str, layout: Layout) -> str:
    for folder in layout.label_folders:
        if (root / split / folder).is_dir():
            return folder
    tried = " or ".join(str(root / split / f) for f in layout.label_folders)
    raise _io.DatasetFormatError(
        f"missing folder {tried}: expected the {split} labels of {NAME}/{layout.name} "
        f"({len(layout.class_names)} classes). Check the archive, or pick the layout that matches "
        "your label folder (mtan7: label_7 or label, mtan19: label_19)."
    )


def _official_files(root: Path, example_id: str) -> dict[str, Path]:
    split, city, stem = example_id.split("/")
    return {
        "image": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        "semseg": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
        "disparity": root / "disparity" / split / city / f"{stem}_disparity.png",
        "camera": root / "camera" / split / city / f"{stem}_camera.json",
    }


def list_ids(root, split: str, layout: str = "mtan7") -> list[str]:
    """Example ids of ``split`` in ``layout``, after checking every file."""
    if split not in SPLITS:
        raise ValueError(f"{NAME}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root, spec = Path(root), _layout(layout)
    if spec.kind == "mtan":
        folders = {"image": "image", "semseg": _label_folder(root, split, spec), "depth": "depth"}
        return list_npy_ids(root, split, folders, f"{NAME}/{layout}")
    image_dir = _io.require_dir(root / "leftImg8bit" / split, f"the {split} images (city folders)")
    ids = sorted(
        f"{split}/{p.parent.name}/{p.name[: -len('_leftImg8bit.png')]}"
        for p in image_dir.glob("*/*_leftImg8bit.png")
    )
    if not ids:
        raise _io.DatasetFormatError(
            f"{image_dir} holds no <city>/*_leftImg8bit.png; expected the {split} images."
        )
    for example_id in ids:
        for key, path in _official_files(root, example_id).items():
            _io.require_file(path, f"the {key} file of {example_id}")
    return ids


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """cityscapesScripts label ids (H, W) -> uint8 train ids (H, W, 1), 255 for ignored ids."""
    table = np.full(256, 255, np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table[np.clip(label_ids.astype(np.int64), 0, 255)][..., None]


def disparity_to_depth(encoded: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """16-bit disparity PNG values -> float32 depth (H, W, 1) in metres, 0 where invalid.

    ``d = (p - 1) / 256`` for ``p > 0`` (the dataset README); ``depth = baseline * fx / d`` where
    ``d > 0``.
    """
    disparity = (encoded.astype(np.float64) - 1.0) / 256.0
    valid = encoded > 1
    depth = np.where(valid, baseline * fx / np.where(valid, disparity, 1.0), 0.0)
    return depth.astype(np.float32)[..., None]


def read_camera(path) -> tuple[float, float]:
    """``(baseline in metres, fx in pixels)`` from a Cityscapes camera JSON file."""
    path = _io.require_file(path, "a camera JSON file")
    try:
        camera = json.loads(Path(path).read_text())
        baseline = float(camera["extrinsic"]["baseline"])
        fx = float(camera["intrinsic"]["fx"])
    except (ValueError, KeyError, TypeError) as err:
        raise _io.DatasetFormatError(
            f"cannot read {path}: expected JSON with extrinsic.baseline and intrinsic.fx "
            f"({type(err).__name__}: {err})."
        ) from err
    if not (baseline > 0 and fx > 0):
        raise _io.DatasetFormatError(
            f"{path}: baseline {baseline} and fx {fx} must both be positive."
        )
    return baseline, fx


def read_example(root, example_id: str, layout: str = "mtan7") -> dict[str, np.ndarray]:
    """Decode one example of ``layout``: ``image`` uint8, ``semseg`` uint8 and ``depth`` float32.

    Raises:
        DatasetFormatError: a file is missing, corrupt or of the wrong shape or values.
    """
    root, spec = Path(root), _layout(layout)
    if spec.kind == "mtan":
        split, index = example_id.split("/")
        folder = _label_folder(root, split, spec)
        paths = {
            key: root / split / sub / f"{index}.npy"
            for key, sub in (("image", "image"), ("semseg", folder), ("depth", "depth"))
        }
        raw = _io.read_npy(paths["image"], "an image (H, W, 3)")
        image = decode_unit_image(raw, paths["image"])
        label = _io.read_npy(paths["semseg"], "a class map (H, W)")
        semseg = decode_class_map(label, len(spec.class_names), paths["semseg"])
        depth = _io.read_npy(paths["depth"], "a disparity map (H, W, 1)")
        if depth.ndim == 2:
            depth = depth[..., None]
        _io.check_shape(depth, (None, None, 1), paths["depth"], "a disparity map")
        depth = _io.clean_depth(depth)
    else:
        paths = _official_files(root, example_id)
        image = _io.read_image(paths["image"], "an RGB PNG")
        label_ids = _io.read_png(paths["semseg"], "an 8-bit labelIds PNG")
        _io.check_shape(label_ids, (None, None), paths["semseg"], "a labelIds PNG")
        semseg = label_ids_to_train_ids(label_ids)
        encoded = _io.read_png(paths["disparity"], "a 16-bit disparity PNG")
        _io.check_shape(encoded, (None, None), paths["disparity"], "a disparity PNG")
        depth = disparity_to_depth(encoded, *read_camera(paths["camera"]))
    size = image.shape[:2]
    for key, array in (("semseg", semseg), ("depth", depth)):
        if array.shape[:2] != size:
            raise _io.DatasetFormatError(
                f"{paths.get(key) or paths['disparity']} is {array.shape[:2]} but its "
                f"image is {size}; expected equal sizes."
            )
    return {"id": example_id, "image": image, "semseg": semseg, "depth": depth}


class CityscapesMtConfig(tfds.core.BuilderConfig):
    """A `Layout` as a TFDS builder config."""

    def __init__(self, *, layout: str, **kwargs):
        super().__init__(name=layout, **kwargs)
        self.layout = layout


class CityscapesMt(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of Cityscapes segmentation + depth (see the module docstring)."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "MTAN .npy layouts (7 / 19 classes) and the official layout."}
    BUILDER_CONFIGS = [
        CityscapesMtConfig(
            layout=name,
            description=f"{len(spec.class_names)} classes, depth as {spec.depth_unit} "
            f"({spec.kind} layout)",
        )
        for name, spec in LAYOUT_OPTIONS.items()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "MTAN form: download the pre-processed Cityscapes folder linked from the MTAN README "
        f"(layout {LAYOUTS['mtan']}). Official form: extract leftImg8bit_trainvaltest.zip, "
        "gtFine_trainvaltest.zip, disparity_trainvaltest.zip and camera_trainvaltest.zip from "
        f"cityscapes-dataset.com (layout {LAYOUTS['official']}). Pass the folder holding them as "
        "manual_dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=_tfds.features(TASKS),
            homepage="https://www.cityscapes-dataset.com/",
            citation="Cordts et al., The Cityscapes Dataset for Semantic Urban Scene "
            "Understanding, CVPR 2016.",
        )

    def _split_generators(self, dl_manager):
        layout = self.builder_config.layout
        root = find_root(dl_manager.manual_dir, layout)
        return {
            _tfds.SPLIT_NAMES[split]: self._generate_examples(root, split, layout)
            for split in SPLITS
        }

    def _generate_examples(self, root, split, layout):
        ids = list_ids(root, split, layout)
        for example_id in ids:
            example = read_example(root, example_id, layout)
            yield example_id, {k: example[k] for k in ("id", "image", *TASKS)}
