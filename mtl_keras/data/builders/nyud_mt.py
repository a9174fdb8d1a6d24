"""NYUD-v2 in the multi-task form of the survey (``NYUD_MT``) and of its PNG re-packaging.

Layout (``<manual_dir>/NYUD_MT/`` or ``<manual_dir>/NYUDv2/``, or ``manual_dir`` itself):

=============================  ==========================================================
``gt_sets/{train,val}.txt``    one image id per line (795 train, 654 val)
``images/<id>.jpg|png``        RGB, 480 x 640
``segmentation/<id>.png``      8-bit labels: 0 = unlabeled -> 255 (ignore), k = 1..40 -> k - 1
``depth/<id>.npy``             float (H, W) or (H, W, 1), metres, 0 = invalid
``normals/<id>.npy``           float (H, W, 3) in [-1, 1], zero vector = invalid
``normals/<id>.png``           (PNG variant) 8-bit RGB, n = 2 x / 255 - 1, renormalised
``edge/<id>.npy``              float (H, W) in {0, 1}
``edge/<id>.png``              (PNG variant) 8-bit, 0 / 255
=============================  ==========================================================

The survey's archive (Vandenhende et al., "Multi-Task Learning for Dense Prediction Tasks: A
Survey", TPAMI 2022, after Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019)
stores JPEG images and ``.npy`` labels; the re-packaging used by ATRC, InvPT and TaskPrompter
(``NYUDv2``) stores PNG images, edges and normals. Each file's variant is found from its extension,
so both (and mixtures) work. Edges are binarised at 0.5 (both variants hold 0/1 maps). A label
whose size differs from its image's is resized to it (nearest; normals bilinearly and
renormalised), as the survey's loader does.

Example:
    >>> from mtl_keras.data.builders import nyud_mt
    >>> root = nyud_mt.find_root("/data")  # doctest: +SKIP
    >>> ex = nyud_mt.read_example(root, nyud_mt.list_ids(root, "val")[0])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mtl_keras.data.builders import _io, _tfds

NAME = "nyud_mt"
SPLITS = ("train", "val")
TASKS = ("semseg", "depth", "normals", "edges")
IMAGE_SIZE = (480, 640)
#: The 40 classes of Gupta et al. (CVPR 2013), label k - 1 for NYU40 id k.
SEMSEG_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor_mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower_curtain", "box", "whiteboard", "person", "night_stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "other_structure", "other_furniture", "other_prop",
)  # fmt: skip
LAYOUT = (
    "NYUD_MT/{gt_sets/{train,val}.txt, images/<id>.jpg, segmentation/<id>.png, depth/<id>.npy, "
    "normals/<id>.npy, edge/<id>.npy} (PNG variant: images, normals and edge as .png)"
)


def find_root(manual_dir) -> Path:
    """The ``NYUD_MT`` folder inside ``manual_dir`` (or ``manual_dir`` itself)."""
    return _io.find_root(manual_dir, ("NYUD_MT", "NYUDv2"), "gt_sets", NAME, LAYOUT)


def _variant(root: Path, folder: str, example_id: str, extensions: tuple[str, ...], what: str):
    return _io.first_existing([root / folder / f"{example_id}{ext}" for ext in extensions], what)


def _files(root: Path, example_id: str) -> dict[str, Path]:
    return {
        "image": _variant(root, "images", example_id, (".jpg", ".png"), "an RGB image"),
        "semseg": _io.require_file(
            root / "segmentation" / f"{example_id}.png", "an 8-bit label PNG with values 0..40"
        ),
        "depth": _io.require_file(root / "depth" / f"{example_id}.npy", "a float depth map"),
        "normals": _variant(root, "normals", example_id, (".npy", ".png"), "a normal map"),
        "edges": _variant(root, "edge", example_id, (".npy", ".png"), "a binary edge map"),
    }


def list_ids(root, split: str) -> list[str]:
    """Ids of ``split`` (``"train"`` or ``"val"``), after checking every file of every example."""
    if split not in SPLITS:
        raise ValueError(f"{NAME}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root)
    ids = _io.read_split(root / "gt_sets" / f"{split}.txt", f"the {split} ids, one per line")
    for example_id in ids:
        _files(root, example_id)
    return ids


def decode_semseg(raw: np.ndarray, path) -> np.ndarray:
    """NYU40 labels (0 = unlabeled, 1..40) -> uint8 (H, W, 1) with 0..39 and 255 = ignore."""
    if raw.ndim != 2:
        raise _io.DatasetFormatError(
            f"{path} has shape {raw.shape}; expected a single-channel label PNG (H, W)."
        )
    bad = (raw > 40) & (raw != 255)
    if bad.any():
        raise _io.DatasetFormatError(
            f"{path} holds label {int(raw[bad][0])}; expected 0 (unlabeled) or 1..40 (NYU40)."
        )
    raw = raw.astype(np.int64)
    return np.where((raw == 0) | (raw == 255), 255, raw - 1).astype(np.uint8)[..., None]


def read_example(root, example_id: str) -> dict[str, np.ndarray]:
    """Decode one example: ``id``, ``image`` uint8 (H, W, 3) and the four task labels.

    Returns:
        ``semseg`` uint8 (H, W, 1) 0..39 / 255, ``depth`` float32 (H, W, 1) metres (0 invalid),
        ``normals`` float32 (H, W, 3) (zero invalid), ``edges`` float32 (H, W, 1) in {0, 1}.

    Raises:
        DatasetFormatError: a file is missing, corrupt or of the wrong shape or values.
    """
    files = _files(Path(root), example_id)
    image = _io.read_image(files["image"])
    size = image.shape[:2]
    semseg = decode_semseg(_io.read_png(files["semseg"], "an 8-bit label PNG"), files["semseg"])

    depth = _io.read_npy(files["depth"], "a float depth map (H, W) in metres")
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    _io.check_shape(depth, (None, None), files["depth"], "a depth map")

    if files["normals"].suffix == ".png":
        encoded = _io.read_png(files["normals"], "an 8-bit RGB normal PNG")
        _io.check_shape(encoded, (None, None, 3), files["normals"], "an RGB normal PNG")
        normals = _io.decode_png_normals(encoded)
    else:
        normals = _io.read_npy(files["normals"], "a float normal map (H, W, 3) in [-1, 1]")
        _io.check_shape(normals, (None, None, 3), files["normals"], "a normal map")
        normals = np.where(np.isfinite(normals), normals, 0.0).astype(np.float32)

    if files["edges"].suffix == ".png":
        edges = _io.read_png(files["edges"], "an 8-bit edge PNG (0 / 255)").astype(np.float32)
        edges = edges / 255.0
    else:
        edges = _io.read_npy(files["edges"], "a binary edge map (H, W)").astype(np.float32)
    if edges.ndim == 3 and edges.shape[-1] == 1:
        edges = edges[..., 0]
    _io.check_shape(edges, (None, None), files["edges"], "an edge map")

    return {
        "id": example_id,
        "image": image,
        "semseg": _io.fit_to(semseg, size, order=0),
        "depth": _io.fit_to(_io.clean_depth(depth), size, order=0),
        "normals": _io.fit_normals(normals, size),
        "edges": _io.fit_to((edges > 0.5).astype(np.float32)[..., None], size, order=0),
    }


class NyudMt(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of `NYUD_MT` (see the module docstring); splits ``train`` and ``validation``."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Survey (ASTMT) NYUD_MT layout and its PNG variant."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download NYUD_MT.tgz (the survey's archive, Google Drive id "
        "14EAEMXmd3zs2hIMY63UhHPSFPDAkiTzw) or the NYUDv2 archive of ATRC/InvPT, extract it and "
        f"pass the folder holding it as manual_dir. Expected layout: {LAYOUT}."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=_tfds.features(TASKS),
            homepage="https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html",
            citation="Silberman et al., Indoor Segmentation and Support Inference from RGBD "
            "Images, ECCV 2012.",
        )

    def _split_generators(self, dl_manager):
        root = find_root(dl_manager.manual_dir)
        return {_tfds.SPLIT_NAMES[split]: self._generate_examples(root, split) for split in SPLITS}

    def _generate_examples(self, root, split):
        return _tfds.generate(root, list_ids(root, split), read_example, TASKS)
