"""File decoding shared by the dataset readers, with errors that name the file and the format.

Every reader of this package goes through these helpers, so a missing folder, a file listed in a
split but absent, or a file that cannot be decoded raises a `DatasetFormatError` that says which
path, what was expected there and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

PathLike = str | os.PathLike


class DatasetFormatError(ValueError):
    """A dataset folder or file is missing or does not hold what its format prescribes."""


def find_root(
    manual_dir: PathLike, folder_names: Sequence[str], marker: str, dataset: str, layout: str
) -> Path:
    """The dataset root: ``manual_dir`` itself or one of its sub-folders ``folder_names``.

    A candidate is the root when it holds ``marker`` (a file or folder relative to the root).

    Raises:
        DatasetFormatError: ``manual_dir`` does not exist or no candidate holds ``marker``.
    """
    base = Path(manual_dir).expanduser()
    if not base.is_dir():
        raise DatasetFormatError(
            f"{dataset}: the folder {base} does not exist. Extract the dataset archive there "
            f"(expected layout: {layout}) or pass the folder that holds it as manual_dir."
        )
    candidates = [base, *(base / name for name in folder_names)]
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    tried = ", ".join(str(c / marker) for c in candidates)
    raise DatasetFormatError(
        f"{dataset}: no dataset root found under {base}; looked for {tried}. Expected layout: "
        f"{layout}. Pass the folder that holds the extracted archive as manual_dir."
    )


def require_dir(path: PathLike, what: str) -> Path:
    """``path`` as a Path; raises `DatasetFormatError` when the folder is missing."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetFormatError(
            f"missing folder {path}: expected {what}. Check that the archive was extracted "
            "completely."
        )
    return path


def require_file(path: PathLike, what: str) -> Path:
    """``path`` as a Path; raises `DatasetFormatError` when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(
            f"missing file {path}: expected {what}. The split lists this example, so the archive "
            "is incomplete; extract it again or remove the id from the split file."
        )
    return path


def first_existing(paths: Sequence[PathLike], what: str) -> Path:
    """The first of ``paths`` that is a file; raises `DatasetFormatError` naming all of them."""
    for path in paths:
        if Path(path).is_file():
            return Path(path)
    listed = " or ".join(str(p) for p in paths)
    raise DatasetFormatError(
        f"missing file {listed}: expected {what}. The split lists this example, so the archive "
        "is incomplete; extract it again or remove the id from the split file."
    )


def read_split(path: PathLike, what: str) -> list[str]:
    """Non-empty, stripped lines of a split file (one example id per line)."""
    path = require_file(path, what)
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetFormatError(f"the split file {path} lists no example; expected {what}.")
    return ids


def _corrupt(path: Path, what: str, err: Exception) -> DatasetFormatError:
    return DatasetFormatError(
        f"cannot decode {path}: expected {what} ({type(err).__name__}: {err}). The file is "
        "corrupt or truncated; extract the archive again."
    )


def read_image(path: PathLike, what: str = "an RGB image") -> np.ndarray:
    """A JPEG or PNG as uint8 (H, W, 3) RGB (grey and palette images are converted)."""
    path = require_file(path, what)
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        raise _corrupt(path, what, err) from err
    return array


def read_png(path: PathLike, what: str) -> np.ndarray:
    """A PNG's stored values as an array: palette indices, grey levels (8 or 16 bit) or RGB."""
    path = require_file(path, what)
    try:
        with Image.open(path) as img:
            img.load()
            if img.format != "PNG":
                raise ValueError(f"the file is a {img.format}, not a PNG")
            array = np.asarray(img)
    except Exception as err:
        raise _corrupt(path, what, err) from err
    if array.dtype == np.int32 and array.size and array.min() >= 0 and array.max() <= 65535:
        array = array.astype(np.uint16)  # PIL opens 16-bit grey PNGs in mode "I"
    return array


def read_npy(path: PathLike, what: str) -> np.ndarray:
    """A ``.npy`` array (no pickled objects)."""
    path = require_file(path, what)
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:
        raise _corrupt(path, what, err) from err
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise DatasetFormatError(
            f"{path} holds {getattr(array, 'dtype', type(array))}; expected {what} (a numeric "
            "array)."
        )
    return array


def read_mat(path: PathLike, key: str, what: str):
    """Variable ``key`` of a MATLAB ``.mat`` file (as read by ``scipy.io.loadmat``)."""
    import scipy.io

    path = require_file(path, what)
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:
        raise _corrupt(path, f"a MATLAB file with {what} in variable {key!r}", err) from err
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DatasetFormatError(
            f"{path} has no variable {key!r} (found {found}); expected {what}."
        )
    return content[key]


def check_shape(array: np.ndarray, shape: tuple, path: PathLike, what: str) -> np.ndarray:
    """Raise unless ``array.shape`` matches ``shape`` (None entries match any size)."""
    ok = array.ndim == len(shape) and all(
        s is None or s == a for s, a in zip(shape, array.shape, strict=True)
    )
    if not ok:
        expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DatasetFormatError(
            f"{path} has shape {array.shape}; expected {what} of shape {expected}."
        )
    return array


def fit_to(array: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resize a label (H, W[, C]) to ``size`` if it differs: nearest (order 0) or bilinear (1).

    The survey's loaders resize a label whose size differs from its image's the same way
    (nearest for class maps, depth and edges; a smooth interpolation for normals).
    """
    if array.shape[:2] == tuple(size):
        return array
    from scipy import ndimage

    zoom = (size[0] / array.shape[0], size[1] / array.shape[1]) + (1,) * (array.ndim - 2)
    out = ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True)
    return out[: size[0], : size[1]]


def fit_normals(normals: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Normals resized bilinearly to ``size`` and renormalised, if their size differs."""
    if normals.shape[:2] == tuple(size):
        return normals
    return unit_normals(fit_to(normals, size, order=1))


def unit_normals(normals: np.ndarray, min_norm: float = 0.5) -> np.ndarray:
    """Float32 normals renormalised to unit length; near-zero vectors become exactly zero.

    Vectors shorter than ``min_norm`` (the zero vector of invalid pixels, and its 8-bit encoding
    (128, 128, 128), which decodes to a norm of about 0.007) and non-finite ones are set to the
    zero vector, the library's "invalid" marker.
    """
    normals = np.asarray(normals, np.float32)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = np.isfinite(norm) & (norm >= min_norm)
    return np.where(valid, normals / np.where(valid, norm, 1.0), 0.0).astype(np.float32)


def decode_png_normals(encoded: np.ndarray) -> np.ndarray:
    """8-bit RGB normals ``x`` -> unit vectors ``2 x / 255 - 1``, renormalised (`unit_normals`)."""
    return unit_normals(2.0 * encoded[..., :3].astype(np.float32) / 255.0 - 1.0)


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """Float32 depth (H, W, 1) with non-finite and non-positive values set to 0 (invalid)."""
    depth = np.asarray(depth, np.float32)
    if depth.ndim == 2:
        depth = depth[..., None]
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
