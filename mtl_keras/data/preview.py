"""A PNG contact sheet of examples: one row per example, one column per image or task.

Example:
    >>> from mtl_keras.data.synthetic import SyntheticScenes
    >>> batch = SyntheticScenes((32, 32)).arrays("val", 2, tasks=("semseg", "depth"))
    >>> preview_grid(batch, "/tmp/preview.png")  # doctest: +SKIP
    '/tmp/preview.png'
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mtl_keras import tasks as tasks_lib
from mtl_keras.data import synthetic_task_options
from mtl_keras.tasks import TaskSpec

Colorizer = Callable[[np.ndarray], np.ndarray]
_MIN_CELL_WIDTH = 72  # cells are upscaled (nearest) until a label such as "human_parts" fits
_GAP = 2
_HEADER = 14


def _show_image(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, np.uint8)


def default_colorize(name: str) -> Colorizer:
    """The fallback colouriser of a column, for when neither ``colorize`` nor a TaskSpec given to
    `preview_grid` supplies one: ``image`` is shown as is; a registered task name is drawn by its
    TaskSpec's ``colorize``, the spec built with the synthetic scenes' options (their class
    counts; `mtl_keras.data.synthetic_task_options`), e.g. class maps in the VOC palette with 255
    in black, depth a blue-to-yellow ramp normalised per image, normals ``(n + 1) / 2``.

    Raises:
        ValueError: if ``name`` is neither ``image`` nor a registered task.
    """
    if name == "image":
        return _show_image
    if name not in tasks_lib.TASKS:
        raise ValueError(
            f"no default colouriser for {name!r}; known names: image, "
            f"{', '.join(tasks_lib.available())}. Pass colorize={{name: fn}} with fn mapping an "
            "(H, W, C) array to uint8 (H, W, 3), or the task's TaskSpec in tasks=[...]."
        )
    return tasks_lib.get(name, **synthetic_task_options().get(name, {})).colorize


def _colorizers(tasks: Mapping[str, TaskSpec] | Iterable[TaskSpec] | None) -> dict:
    if tasks is None:
        return {}
    specs = tasks.values() if isinstance(tasks, Mapping) else tasks
    return {spec.name: spec.colorize for spec in specs}


def preview_grid(
    examples: Mapping[str, np.ndarray],
    path: str,
    *,
    colorize: Mapping[str, Colorizer] | None = None,
    tasks: Mapping[str, TaskSpec] | Iterable[TaskSpec] | None = None,
) -> str:
    """Writes a PNG grid: rows are examples, columns are ``image`` then every other key.

    Args:
        examples: stacked arrays (N, H, W, C) keyed by ``"image"`` and task names, all with the
            same N, H and W.
        path: where to write the PNG; missing parent folders are created.
        colorize: ``{column: fn}`` with ``fn(array (H, W, C)) -> uint8 (H, W, 3)``; it takes
            precedence over ``tasks``.
        tasks: TaskSpecs (or ``{name: spec}``) whose ``colorize`` draws the column of their
            name. Columns named by neither fall back to `default_colorize`.

    Returns:
        ``path``.

    Raises:
        ValueError: without an ``"image"`` entry, on mismatched shapes, or when a colouriser
            returns something other than uint8 (H, W, 3).
    """
    if "image" not in examples:
        raise ValueError(f"examples need an 'image' entry; got keys {sorted(examples)}")
    colorize = {**_colorizers(tasks), **(colorize or {})}
    names = ["image", *(k for k in examples if k != "image")]
    count, height, width = np.shape(examples["image"])[:3]
    for name in names:
        if np.shape(examples[name])[:3] != (count, height, width):
            raise ValueError(
                f"examples[{name!r}] has shape {np.shape(examples[name])}; expected "
                f"({count}, {height}, {width}, C) like examples['image']"
            )
    scale = max(1, math.ceil(_MIN_CELL_WIDTH / width))
    cell_h, cell_w = height * scale, width * scale
    sheet = np.full(
        (_HEADER + count * (cell_h + _GAP), len(names) * (cell_w + _GAP), 3), 255, np.uint8
    )
    for col, name in enumerate(names):
        fn = colorize.get(name) or default_colorize(name)
        for row in range(count):
            rgb = np.asarray(fn(np.asarray(examples[name][row])))
            if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
                raise ValueError(
                    f"the colouriser of {name!r} returned {rgb.dtype} {rgb.shape}; expected "
                    f"uint8 {(height, width, 3)}"
                )
            top, left = _HEADER + row * (cell_h + _GAP), col * (cell_w + _GAP)
            sheet[top : top + cell_h, left : left + cell_w] = rgb.repeat(scale, 0).repeat(scale, 1)

    image = Image.fromarray(sheet)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    for col, name in enumerate(names):
        label = name
        while len(label) > 1 and draw.textlength(label, font=font) > cell_w:
            label = label[:-1]
        draw.text((col * (cell_w + _GAP) + 1, 1), label, fill=(0, 0, 0), font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path, format="PNG")
    return str(path)
