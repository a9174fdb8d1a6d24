"""PASCAL-Context in the five-task form of ASTMT and the survey (``PASCAL_MT``).

Layout (``<manual_dir>/PASCAL_MT/`` or ``manual_dir`` itself):

========================================  ==========================================================
``ImageSets/Context/{train,val}.txt``     ids such as ``2008_000002`` (4,998 train, 5,105 val)
``JPEGImages/<id>.jpg``                   RGB, about 500 x 375
``semseg/VOC12/<id>.png``, else           8-bit (palette) labels: 0 = background, 1..20 = VOC
``semseg/pascal-context/<id>.png``        classes, 255 = ignore (21 classes)
``human_parts/<id>.mat``                  PASCAL-Part ``anno`` struct (Chen et al., CVPR 2014)
``pascal-context/trainval/<id>.mat``      ``LabelMap``: the 459-class PASCAL-Context labels
``normals_distill/<id>.png``              8-bit RGB normals n = 2 x / 255 - 1
``sal_distill/<id>.png``                  8-bit saliency, salient where x / 255 > 0.5
========================================  ==========================================================

Labels, as Maninis et al. ("Attentive Single-Tasking of Multiple Tasks", CVPR 2019) and
Vandenhende et al. ("Multi-Task Learning for Dense Prediction Tasks: A Survey", TPAMI 2022)
derive them:

* ``human_parts``: for every object of class 15 (person) that has parts, each part mask is painted
  with its group (`PART_GROUPS`: head 1, torso 2, upper arm 3, lower arm 4, upper leg 5, lower
  leg 6) over a background of 0. An image without any person part (no person, or persons without
  part annotation) is all 255, so it is ignored by the loss and the mIoU.
* ``edges``: the boundaries of ``LabelMap``: pixels where the 4-neighbour Laplacian is non-zero,
  thinned to one pixel (`label_map_edges`).
* ``normals``: the distilled normals kept only on pixels whose ``LabelMap`` class also exists in
  NYUD-v2 (the names shared by the NYU and PASCAL-Context class lists, minus ``unknown``, plus
  ``tvmonitor``; see `normals_valid_classes`), the zero vector (invalid) elsewhere; decoded vectors
  are renormalised.
* ``saliency``: ``x / 255 > 0.5`` as float32 {0, 1}.

Example:
    >>> from mtl_keras.data.builders import pascal_mt
    >>> root = pascal_mt.find_root("/data")  # doctest: +SKIP
    >>> ex = pascal_mt.read_example(root, "2008_000002")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mtl_keras.data.builders import _io, _tfds

NAME = "pascal_mt"
SPLITS = ("train", "val")
TASKS = ("semseg", "human_parts", "normals", "edges", "saliency")
IMAGE_SIZE = (512, 512)
SEMSEG_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
PART_CLASSES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")
PERSON_CLASS = 15
#: PASCAL-Part person part names -> the six groups of ASTMT (0 is the background).
PART_GROUPS = {
    **dict.fromkeys(
        ("head", "hair", "lear", "rear", "leye", "reye", "lebrow", "rebrow", "nose", "mouth"), 1
    ),
    **dict.fromkeys(("torso", "neck"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}
LAYOUT = (
    "PASCAL_MT/{ImageSets/Context/{train,val}.txt, JPEGImages/<id>.jpg, "
    "semseg/{VOC12,pascal-context}/<id>.png, human_parts/<id>.mat, "
    "pascal-context/trainval/<id>.mat, normals_distill/<id>.png, sal_distill/<id>.png}"
)


def find_root(manual_dir) -> Path:
    """The ``PASCAL_MT`` folder inside ``manual_dir`` (or ``manual_dir`` itself)."""
    return _io.find_root(manual_dir, ("PASCAL_MT",), "ImageSets/Context", NAME, LAYOUT)


def _class_names(filename: str) -> list[str]:
    text = resources.files(__package__).joinpath("db_info", filename).read_text()
    return json.loads(text)["names"]


@functools.cache
def normals_valid_classes() -> frozenset[int]:
    """PASCAL-Context labels on which the distilled normals are kept.

    The classes whose name is also an NYU Depth v2 object name (``db_info/nyu_classes.json``,
    Silberman et al., ECCV 2012), except ``unknown``, plus ``tvmonitor`` (NYU calls it
    ``television``/``monitor``), as in ASTMT: the normals were distilled from a network trained on
    NYUD, so only these classes are trusted. Label ``k`` is ``names[k - 1]`` of
    ``db_info/pascal_context_classes.json`` (Mottaghi et al., CVPR 2014).
    """
    context = {name: k + 1 for k, name in enumerate(_class_names("pascal_context_classes.json"))}
    shared = {context[n] for n in _class_names("nyu_classes.json") if n in context}
    return frozenset((shared - {context["unknown"]}) | {context["tvmonitor"]})


def _files(root: Path, example_id: str) -> dict[str, Path]:
    return {
        "image": _io.require_file(root / "JPEGImages" / f"{example_id}.jpg", "a JPEG image"),
        "semseg": _io.first_existing(
            [root / "semseg" / sub / f"{example_id}.png" for sub in ("VOC12", "pascal-context")],
            "a 21-class label PNG",
        ),
        "human_parts": _io.require_file(
            root / "human_parts" / f"{example_id}.mat", "a PASCAL-Part 'anno' .mat file"
        ),
        "context": _io.require_file(
            root / "pascal-context" / "trainval" / f"{example_id}.mat",
            "a PASCAL-Context .mat file with 'LabelMap'",
        ),
        "normals": _io.require_file(
            root / "normals_distill" / f"{example_id}.png", "an 8-bit RGB normal PNG"
        ),
        "saliency": _io.require_file(
            root / "sal_distill" / f"{example_id}.png", "an 8-bit saliency PNG"
        ),
    }


def list_ids(root, split: str) -> list[str]:
    """Ids of ``split`` (``"train"`` or ``"val"``), after checking every file of every example."""
    if split not in SPLITS:
        raise ValueError(f"{NAME}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    root = Path(root)
    split_file = root / "ImageSets" / "Context" / f"{split}.txt"
    ids = _io.read_split(split_file, f"the {split} ids, one per line")
    for example_id in ids:
        _files(root, example_id)
    return ids


def _field(record, name: str, path):
    try:
        return record[name]
    except (ValueError, KeyError, IndexError) as err:
        raise _io.DatasetFormatError(
            f"{path}: the PASCAL-Part struct has no field {name!r} ({err}); expected anno.objects "
            "with fields class_ind, mask, parts and parts with fields part_name, mask."
        ) from err


def decode_human_parts(anno, size: tuple[int, int], path) -> np.ndarray:
    """A PASCAL-Part ``anno`` struct -> uint8 (H, W, 1): 0 background, 1..6 parts, or all 255.

    Args:
        anno: the ``anno`` variable as read by ``scipy.io.loadmat`` (a 1 x 1 struct array).
        size: the image size ``(H, W)``; masks of another size are resized (nearest).
        path: the file, for error messages.
    """
    objects = np.asarray(_field(anno[0, 0], "objects", path)).reshape(-1)
    target = np.zeros(size, np.uint8)
    for obj in objects:
        if int(np.asarray(_field(obj, "class_ind", path)).reshape(-1)[0]) != PERSON_CLASS:
            continue
        parts = np.asarray(_field(obj, "parts", path)).reshape(-1)
        for part in parts:
            name = str(np.asarray(_field(part, "part_name", path)).reshape(-1)[0])
            if name not in PART_GROUPS:
                raise _io.DatasetFormatError(
                    f"{path}: unknown person part {name!r}; expected one of {sorted(PART_GROUPS)}."
                )
            mask = _io.fit_to(np.asarray(_field(part, "mask", path)) > 0, size, order=0)
            target[mask] = PART_GROUPS[name]
    if not target.any():
        target[:] = 255
    return target[..., None]


def label_map_edges(label_map: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a label map: ``thin(|Laplacian(label_map)| > 0)``, float32 {0, 1}.

    The Laplacian is the 4-neighbour kernel [[0, 1, 0], [1, -4, 1], [0, 1, 0]] with the borders
    mirrored without repeating the edge pixel, i.e. ``scipy.ndimage.laplace(x, mode="mirror")``.
    That is exactly OpenCV's ``cv2.Laplacian(x, cv2.CV_64F)`` (ksize 1 uses this kernel and the
    default border ``BORDER_REFLECT_101`` is scipy's ``"mirror"``), which ASTMT and the survey use;
    integer labels make both exact in float64. Thinning is scikit-image's ``thin`` (Zhang-Suen style
    iterative thinning, as ASTMT).
    """
    from scipy import ndimage
    from skimage.morphology import thin

    laplacian = ndimage.laplace(np.asarray(label_map, np.float64), mode="mirror")
    return thin(np.abs(laplacian) > 0).astype(np.float32)


def read_example(root, example_id: str) -> dict[str, np.ndarray]:
    """Decode one example: ``id``, ``image`` uint8 (H, W, 3) and the five task labels.

    Returns:
        ``semseg`` uint8 (H, W, 1) 0..20 / 255, ``human_parts`` uint8 (H, W, 1) 0..6 / 255,
        ``normals`` float32 (H, W, 3), ``edges`` and ``saliency`` float32 (H, W, 1) in {0, 1}.

    Raises:
        DatasetFormatError: a file is missing, corrupt or of the wrong shape or values.
    """
    files = _files(Path(root), example_id)
    image = _io.read_image(files["image"], "a JPEG image")
    size = image.shape[:2]

    semseg = _io.read_png(files["semseg"], "a 21-class label PNG")
    _io.check_shape(semseg, (None, None), files["semseg"], "a single-channel label PNG")
    bad = (semseg > 20) & (semseg != 255)
    if bad.any():
        raise _io.DatasetFormatError(
            f"{files['semseg']} holds label {int(semseg[bad][0])}; expected 0..20 or 255."
        )

    anno = _io.read_mat(files["human_parts"], "anno", "a PASCAL-Part annotation")
    label_map = _io.read_mat(files["context"], "LabelMap", "the PASCAL-Context labels")
    _io.check_shape(label_map, (None, None), files["context"], "a LabelMap")
    label_map = _io.fit_to(label_map, size, order=0)

    encoded = _io.read_png(files["normals"], "an 8-bit RGB normal PNG")
    _io.check_shape(encoded, (None, None, None), files["normals"], "an RGB normal PNG")
    normals = _io.fit_normals(_io.decode_png_normals(encoded), size)
    keep = np.isin(label_map, list(normals_valid_classes()))
    normals = np.where(keep[..., None], normals, 0.0).astype(np.float32)

    saliency = _io.read_png(files["saliency"], "an 8-bit saliency PNG")
    if saliency.ndim == 3:
        saliency = saliency[..., 0]
    saliency = (saliency.astype(np.float32) / 255.0 > 0.5).astype(np.float32)

    return {
        "id": example_id,
        "image": image,
        "semseg": _io.fit_to(semseg.astype(np.uint8), size, order=0)[..., None],
        "human_parts": decode_human_parts(anno, size, files["human_parts"]),
        "normals": normals,
        "edges": label_map_edges(label_map)[..., None],
        "saliency": _io.fit_to(saliency, size, order=0)[..., None],
    }


class PascalMt(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of `PASCAL_MT` (see the module docstring); splits ``train``/``validation``."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "ASTMT PASCAL_MT layout with five tasks."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download PASCAL_MT.tgz (https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz), "
        f"extract it and pass the folder holding it as manual_dir. Expected layout: {LAYOUT}."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=_tfds.features(TASKS),
            homepage="https://cs.stanford.edu/~roozbeh/pascal-context/",
            citation="Mottaghi et al., The Role of Context for Object Detection and Semantic "
            "Segmentation in the Wild, CVPR 2014; Chen et al., Detect What You Can, CVPR 2014; "
            "Maninis et al., Attentive Single-Tasking of Multiple Tasks, CVPR 2019.",
        )

    def _split_generators(self, dl_manager):
        root = find_root(dl_manager.manual_dir)
        return {_tfds.SPLIT_NAMES[split]: self._generate_examples(root, split) for split in SPLITS}

    def _generate_examples(self, root, split):
        return _tfds.generate(root, list_ids(root, split), read_example, TASKS)
