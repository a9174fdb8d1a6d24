"""Experiment recipes: one module per recipe, each with a ``recipe()`` function returning a Recipe.

The folder sits at the top of the repository and installs as ``mtl_keras.recipes`` (the
``package-dir`` mapping in ``pyproject.toml``). ``get(name)`` imports ``mtl_keras.recipes.<name>``
and calls its ``recipe()``; ``available()`` lists them.
"""

from __future__ import annotations

import importlib
import pkgutil

from mtl_keras.training.recipe import Recipe


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> Recipe:
    """The recipe called ``name``."""
    if name not in available():
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").recipe()
