"""Experiment recipes: one module per recipe, each with a ``recipe()`` function returning a Recipe.

The folder sits at the top of the repository and installs as ``mtl_keras.recipes`` (the
``package-dir`` mapping in ``pyproject.toml``). ``get(name)`` imports ``mtl_keras.recipes.<name>``
and calls its ``recipe()``; ``available()`` lists them and ``describe(name)`` gives the first
paragraph of a recipe's docstring, read from its source: listing recipes loads no TensorFlow.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from mtl_keras._names import canonical, summary

if TYPE_CHECKING:
    from mtl_keras.training.recipe import Recipe


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def describe(name: str) -> str:
    """The first paragraph of recipe ``name``'s module docstring, on one line."""
    name = canonical("recipe", name, available())
    source = Path(__path__[0], f"{name}.py").read_text(encoding="utf-8")
    return summary(ast.get_docstring(ast.parse(source)))


def get(name: str) -> Recipe:
    """The recipe called ``name`` (case, ``-`` and ``_`` aside: ``MTI-Net_pascal`` works)."""
    name = canonical("recipe", name, available())
    return importlib.import_module(f"{__name__}.{name}").recipe()
