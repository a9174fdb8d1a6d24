"""Tiny fake copies of the published datasets, written in their exact on-disk formats.

Each ``write_*`` function creates the archive folder under ``manual_dir`` and returns the
decoded examples the loaders must produce (``{id: {key: array}}``), computed here independently
of the library's decoders (by hand from the values written).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

SIZE = (6, 8)


def _unit(rng, shape):
    n = rng.normal(size=(*shape, 3))
    n[..., 2] = np.abs(n[..., 2]) + 0.5
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def _write_split(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ids) + "\n")


def _png(path: Path, array: np.ndarray) -> None:
    """8-bit grey/RGB or (uint16 input) 16-bit grey PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def encode_normals_png(normals: np.ndarray) -> np.ndarray:
    """Unit normals -> uint8 RGB ``round((n + 1) * 255 / 2)`` (zero vector -> 128)."""
    return np.round((normals + 1.0) * 255.0 / 2.0).astype(np.uint8)


def decode_normals_png(encoded: np.ndarray) -> np.ndarray:
    n = 2.0 * encoded.astype(np.float64) / 255.0 - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm >= 0.5, n / norm, 0.0).astype(np.float32)


# --------------------------------------------------------------------------- NYUD_MT
def write_nyud(manual_dir, *, variant: str = "npy", seed: int = 0) -> dict:
    """``NYUD_MT/`` (``variant="npy"``: JPEG + .npy) or ``NYUDv2/`` (``"png"``: PNG files)."""
    rng = np.random.default_rng(seed)
    root = Path(manual_dir) / ("NYUD_MT" if variant == "npy" else "NYUDv2")
    splits = {"train": ["0001", "0002", "0003"], "val": ["0004", "0005"]}
    for split, ids in splits.items():
        _write_split(root / "gt_sets" / f"{split}.txt", ids)
    expected = {}
    h, w = SIZE
    for example_id in splits["train"] + splits["val"]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        seg = rng.integers(0, 41, (h, w)).astype(np.uint8)
        seg[0, 0], seg[0, 1] = 0, 40
        depth = rng.uniform(0.5, 9.0, (h, w)).astype(np.float32)
        depth[1, :2] = 0.0
        depth[1, 2] = np.nan
        normals = _unit(rng, (h, w))
        normals[2, :3] = 0.0
        edges = (rng.uniform(size=(h, w)) < 0.3).astype(np.float32)
        semseg = np.where(seg == 0, 255, seg.astype(np.int64) - 1).astype(np.uint8)[..., None]
        clean_depth = np.where(np.isnan(depth), 0.0, depth).astype(np.float32)[..., None]
        if variant == "npy":
            path = root / "images" / f"{example_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, format="JPEG", quality=100)
            with Image.open(path) as img:
                image = np.asarray(img.convert("RGB"))
            _npy(root / "normals" / f"{example_id}.npy", normals)
            _npy(root / "edge" / f"{example_id}.npy", edges)
            expected_normals = normals
        else:
            _png(root / "images" / f"{example_id}.png", image)
            encoded = encode_normals_png(normals)
            _png(root / "normals" / f"{example_id}.png", encoded)
            _png(root / "edge" / f"{example_id}.png", (edges * 255).astype(np.uint8))
            expected_normals = decode_normals_png(encoded)
        _png(root / "segmentation" / f"{example_id}.png", seg)
        _npy(root / "depth" / f"{example_id}.npy", depth)
        expected[example_id] = {
            "image": image,
            "semseg": semseg,
            "depth": clean_depth,
            "normals": expected_normals,
            "edges": edges[..., None],
        }
    return expected


# --------------------------------------------------------------------------- PASCAL_MT
PERSON, DOG, CAT = 15, 12, 8
# PASCAL-Context labels used in the fake LabelMaps: in NYU's list (wall 440, person 284, floor 158,
# plus the special tvmonitor 427) and not in it (sky 360, aeroplane 2).
CONTEXT_VALID = (440, 284, 158, 427)
CONTEXT_INVALID = (360, 2)


def _anno(imname: str, objects: list[tuple]) -> np.ndarray:
    """A PASCAL-Part ``anno`` struct: fields imname, objects(class, class_ind, mask, parts)."""
    obj_dtype = [("class", object), ("class_ind", object), ("mask", object), ("parts", object)]
    objs = np.zeros((1, len(objects)), dtype=obj_dtype)
    for k, (name, class_ind, mask, parts) in enumerate(objects):
        if parts:
            part_arr = np.zeros((1, len(parts)), dtype=[("part_name", object), ("mask", object)])
            for j, (part_name, part_mask) in enumerate(parts):
                part_arr[0, j] = (part_name, part_mask.astype(np.uint8))
        else:
            part_arr = np.zeros((0, 0))
        objs[0, k] = (name, np.array([[class_ind]], np.uint8), mask.astype(np.uint8), part_arr)
    anno = np.zeros((1, 1), dtype=[("imname", object), ("objects", object)])
    anno[0, 0] = (imname, objs)
    return anno


def laplacian_edges(label_map: np.ndarray) -> np.ndarray:
    """Edges computed independently: 4-neighbour Laplacian with OpenCV's REFLECT_101 border
    (numpy ``reflect`` padding), non-zero, then scikit-image's thinning."""
    from skimage.morphology import thin

    x = np.pad(label_map.astype(np.float64), 1, mode="reflect")
    lap = x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:] - 4 * x[1:-1, 1:-1]
    return thin(lap != 0).astype(np.float32)


def write_pascal(manual_dir, *, seed: int = 0) -> dict:
    """``PASCAL_MT/`` with three images: a person with parts and a dog (VOC12 semseg), a cat only
    (pascal-context semseg) and a person without part annotation."""
    rng = np.random.default_rng(seed)
    root = Path(manual_dir) / "PASCAL_MT"
    splits = {"train": ["2008_000001", "2008_000002"], "val": ["2008_000003"]}
    for split, ids in splits.items():
        _write_split(root / "ImageSets" / "Context" / f"{split}.txt", ids)
    h, w = SIZE
    expected = {}
    for k, example_id in enumerate(splits["train"] + splits["val"]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = root / "JPEGImages" / f"{example_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="JPEG", quality=100)
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))

        seg = rng.integers(0, 21, (h, w)).astype(np.uint8)
        seg[0, :2] = 255
        if k == 0:
            palette_img = Image.fromarray(seg)  # putpalette turns it into mode "P"
            palette_img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
            (root / "semseg" / "VOC12").mkdir(parents=True, exist_ok=True)
            palette_img.save(root / "semseg" / "VOC12" / f"{example_id}.png")
        else:
            _png(root / "semseg" / "pascal-context" / f"{example_id}.png", seg)

        head = np.zeros((h, w), bool)
        head[0:2, 0:2] = True
        arm = np.zeros((h, w), bool)
        arm[2:4, 0:2] = True
        shin = np.zeros((h, w), bool)
        shin[4:6, 0:3] = True
        neck = np.zeros((h, w), bool)
        neck[2, 2] = True
        dog = np.zeros((h, w), bool)
        dog[:, 5:] = True
        if k == 0:
            objects = [
                ("person", PERSON, head | arm | shin | neck,
                 [("hair", head), ("luarm", arm), ("rlleg", shin), ("neck", neck)]),
                ("dog", DOG, dog, []),
            ]  # fmt: skip
            parts = np.zeros((h, w), np.uint8)
            parts[head], parts[arm], parts[shin], parts[neck] = 1, 3, 6, 2
        elif k == 1:
            objects = [("cat", CAT, dog, [])]
            parts = np.full((h, w), 255, np.uint8)
        else:
            objects = [("person", PERSON, head, [])]
            parts = np.full((h, w), 255, np.uint8)
        hp = root / "human_parts" / f"{example_id}.mat"
        hp.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(hp, {"anno": _anno(example_id, objects)})

        label_map = np.full((h, w), CONTEXT_VALID[k % 4], np.uint16)
        label_map[:, w // 2 :] = CONTEXT_INVALID[k % 2]
        label_map[h // 2 :, : w // 2] = 427
        lm = root / "pascal-context" / "trainval" / f"{example_id}.mat"
        lm.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(lm, {"LabelMap": label_map})

        encoded = encode_normals_png(_unit(rng, (h, w)))
        _png(root / "normals_distill" / f"{example_id}.png", encoded)
        keep = np.isin(label_map, CONTEXT_VALID)[..., None]
        normals = np.where(keep, decode_normals_png(encoded), 0.0).astype(np.float32)

        sal = rng.integers(0, 256, (h, w)).astype(np.uint8)
        sal[0, 0], sal[0, 1] = 127, 128
        _png(root / "sal_distill" / f"{example_id}.png", sal)

        expected[example_id] = {
            "image": image,
            "semseg": seg[..., None],
            "human_parts": parts[..., None],
            "normals": normals,
            "edges": laplacian_edges(label_map)[..., None],
            "saliency": (sal >= 128).astype(np.float32)[..., None],
        }
    return expected


# --------------------------------------------------------------------------- MTAN .npy forms
def write_mtan(
    manual_dir,
    folder: str,
    *,
    label_folder: str,
    num_classes: int,
    normals: bool,
    counts=(3, 2),
    seed: int = 0,
) -> dict:
    """``<folder>/{train,val}/{image,<label_folder>,depth[,normal]}/<i>.npy`` (MTAN / LibMTL)."""
    rng = np.random.default_rng(seed)
    root = Path(manual_dir) / folder
    h, w = SIZE
    expected = {}
    for split, count in zip(("train", "val"), counts, strict=True):
        for i in range(count):
            image = rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
            image[0, 0] = (0.0, 1.0, 0.5)
            label = rng.integers(-1, num_classes, (h, w)).astype(np.float32)
            label[0, :2] = (-1, num_classes - 1)
            depth = rng.uniform(0.0, 0.5, (h, w, 1)).astype(np.float32)
            depth[1, :2] = 0.0
            _npy(root / split / "image" / f"{i}.npy", image)
            _npy(root / split / label_folder / f"{i}.npy", label)
            _npy(root / split / "depth" / f"{i}.npy", depth)
            ex = {
                "image": np.round(image * 255).astype(np.uint8),
                "semseg": np.where(label < 0, 255, label).astype(np.uint8)[..., None],
                "depth": depth,
            }
            if normals:
                n = _unit(rng, (h, w))
                n[3, :2] = 0.0
                _npy(root / split / "normal" / f"{i}.npy", n)
                ex["normals"] = n
            expected[f"{split}/{i}"] = ex
    return expected


# --------------------------------------------------------------------------- official Cityscapes
TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
            25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
CAMERA = {
    "extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "x": 1.7, "y": 0.1,
                  "yaw": -0.0195, "z": 1.3},
    "intrinsic": {"fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137},
}  # fmt: skip


def write_cityscapes_official(manual_dir, *, seed: int = 0) -> dict:
    """``leftImg8bit/ gtFine/ disparity/ camera/`` for two train and one val frames."""
    rng = np.random.default_rng(seed)
    root = Path(manual_dir)
    h, w = SIZE
    frames = {"train": [("aachen", "000000", "000019"), ("bochum", "000001", "000020")],
              "val": [("frankfurt", "000002", "000021")]}  # fmt: skip
    expected = {}
    for split, items in frames.items():
        for city, seq, frame in items:
            stem = f"{city}_{seq}_{frame}"
            base = Path(split) / city
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            _png(root / "leftImg8bit" / base / f"{stem}_leftImg8bit.png", image)
            label_ids = rng.integers(0, 34, (h, w)).astype(np.uint8)
            label_ids[0, :3] = (0, 7, 33)
            _png(root / "gtFine" / base / f"{stem}_gtFine_labelIds.png", label_ids)
            _png(root / "gtFine" / base / f"{stem}_gtFine_color.png", image)  # ignored extra
            disparity = rng.integers(2, 30000, (h, w)).astype(np.uint16)
            disparity[1, :3] = (0, 1, 65535)
            _png(root / "disparity" / base / f"{stem}_disparity.png", disparity)
            (root / "camera" / base).mkdir(parents=True, exist_ok=True)
            (root / "camera" / base / f"{stem}_camera.json").write_text(json.dumps(CAMERA))
            train_ids = np.array([[TRAIN_ID.get(int(v), 255) for v in row] for row in label_ids])
            d = (disparity.astype(np.float64) - 1.0) / 256.0
            depth = np.zeros((h, w))
            valid = disparity > 1
            depth[valid] = 0.209313 * 2262.52 / d[valid]
            expected[f"{split}/{city}/{stem}"] = {
                "image": image,
                "semseg": train_ids.astype(np.uint8)[..., None],
                "depth": depth.astype(np.float32)[..., None],
            }
    return expected
