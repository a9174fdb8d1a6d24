"""How label maps and activated predictions are drawn: ``(H, W, C)`` array -> uint8 ``(H, W, 3)``.

Each TaskSpec names one of these (or its own function) as its ``colorize``; `colorize_map` is the
default of a task that declares none. Previews, TensorBoard images and prediction grids only call
``spec.colorize``.
"""

from __future__ import annotations

import numpy as np


def palette(n: int) -> np.ndarray:
    """A deterministic, well-spread RGB palette of ``n`` colours (the PASCAL VOC bit scheme)."""
    colors = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i + 1, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors[i] = (r, g, b)
    return colors


def colorize_classes(array: np.ndarray, num_classes: int, ignore_value: int = 255) -> np.ndarray:
    """Class map (H, W, 1) or scores (H, W, C) -> RGB; ignored pixels are black."""
    array = np.asarray(array)
    if array.shape[-1] > 1:
        array = np.argmax(array, axis=-1)[..., None]
    ids = array[..., 0].astype(np.int64)
    out = np.zeros(ids.shape + (3,), np.uint8)
    valid = (ids >= 0) & (ids < num_classes) & (ids != ignore_value)
    out[valid] = palette(num_classes)[ids[valid]]
    return out


def _ramp(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> float RGB in [0, 1], blue (0) to yellow (1)."""
    return np.stack([t, 0.2 + 0.6 * t * (1 - t) * 4 / 2, 1.0 - t], axis=-1)


def colorize_scalar(array: np.ndarray) -> np.ndarray:
    """A scalar map (H, W, 1) -> RGB (blue to yellow), normalised over valid (> 0) pixels."""
    x = np.asarray(array, np.float32)[..., 0]
    valid = x > 0
    lo, hi = (x[valid].min(), x[valid].max()) if valid.any() else (0.0, 1.0)
    t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = _ramp(t)
    return (np.where(valid[..., None], rgb, 0.0) * 255).astype(np.uint8)


def colorize_unit(array: np.ndarray) -> np.ndarray:
    """A probability or binary map (H, W, 1) in [0, 1] -> grey RGB."""
    x = np.clip(np.asarray(array, np.float32)[..., 0], 0.0, 1.0)
    return np.repeat((x * 255).astype(np.uint8)[..., None], 3, axis=-1)


def colorize_normals(array: np.ndarray) -> np.ndarray:
    """Normals (H, W, 3) in [-1, 1] -> RGB as (n + 1) / 2; invalid (zero) vectors stay black."""
    n = np.asarray(array, np.float32)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    unit = n / np.maximum(norm, 1e-12)
    return np.where(norm > 0, (unit + 1.0) * 127.5, 0.0).astype(np.uint8)


def colorize_map(array: np.ndarray) -> np.ndarray:
    """The default drawing of any dense map (H, W, C), for tasks that declare no ``colorize``.

    * one channel: blue to yellow, normalised between the map's smallest and largest finite value;
    * two channels: an image-plane vector (optical flow, offsets) drawn as a colour wheel, the
      direction as hue and the length, relative to the longest vector, as brightness;
    * more channels: the largest channel per pixel (heatmaps, scores), drawn as one channel.

    Non-finite values are black.
    """
    x = np.asarray(array, np.float32)
    if x.ndim != 3:
        raise ValueError(f"colorize_map draws an (H, W, C) map, got shape {x.shape}")
    finite = np.isfinite(x).all(axis=-1)
    x = np.where(np.isfinite(x), x, 0.0)
    if x.shape[-1] == 2:
        u, v = x[..., 0], x[..., 1]
        length = np.hypot(u, v)
        value = length / max(float(length.max()), 1e-6)
        hue = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0  # [0, 1], 0 pointing right
        rgb = _hsv_to_rgb(hue, np.ones_like(hue), value)
    else:
        s = x[..., 0] if x.shape[-1] == 1 else x.max(axis=-1)
        lo, hi = (float(s[finite].min()), float(s[finite].max())) if finite.any() else (0.0, 1.0)
        rgb = _ramp(np.clip((s - lo) / max(hi - lo, 1e-6), 0.0, 1.0))
    return (np.where(finite[..., None], rgb, 0.0) * 255).astype(np.uint8)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    channels = [np.choose(i, [c[k] for c in choices]) for k in range(3)]
    return np.stack(channels, axis=-1)


__all__ = [
    "colorize_classes",
    "colorize_map",
    "colorize_normals",
    "colorize_scalar",
    "colorize_unit",
    "palette",
]
