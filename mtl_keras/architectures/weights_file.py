"""Loading a ``.weights.h5`` file into a model, with errors that say what does not fit.

``keras.Model.load_weights`` of a file saved from a model of other shapes (another backbone width,
class count or head) raises an error that prints the values of the variables it could not assign
(tens of kilobytes of numbers), and a file that is empty, truncated or not HDF5 gives h5py's
``OSError`` without the file's path. :func:`load_weights_file` names the file, the first variable
that does not fit and both shapes instead.
"""

from __future__ import annotations

import errno
import os
import re
import warnings

import keras

#: Keras's message for a variable assigned a value of another shape (``Variable.assign``)
_SHAPES = re.compile(
    r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))\. "
    r"Target variable: <Variable path=([^,>]+)"
)
#: Keras's count of the layers it could not load
_COUNT = re.compile(r"A total of (\d+) objects could not be loaded")
#: longest Keras message passed on as it is (longer ones are cut to their first line)
_LONGEST = 300

_FIX = (
    "build the model as the weights were trained (backbone and its widths, tasks and their "
    "class counts, head), e.g. with the --set options of the training run"
)


class WeightsMismatchError(ValueError):
    """A weights file saved from a model whose variables have other shapes.

    Attributes:
        variable: path of the first variable that does not fit (e.g. ``"stem_conv/kernel"``).
        file_shape: its shape in the file.
        model_shape: its shape in the model.
    """

    def __init__(self, message: str, variable: str, file_shape: str, model_shape: str):
        super().__init__(message)
        self.variable, self.file_shape, self.model_shape = variable, file_shape, model_shape


def load_weights_file(model: keras.Model, path: str, *, source: str | None = None) -> None:
    """``model.load_weights(path)``, with errors that name the file and what does not fit.

    Args:
        model: the built model to load into.
        path: a ``.weights.h5`` file.
        source: how messages name the file (default ``path``; e.g. a part of a larger file).

    Raises:
        FileNotFoundError, IsADirectoryError: ``path`` is missing or a folder.
        WeightsMismatchError: a variable's shape differs between file and model; the message
            names the first such variable and both shapes, not their values.
        ValueError: another mismatch (Keras's message, cut to its first line when long).
        OSError: the file is empty, truncated or not an HDF5 file.

    Example:
        >>> load_weights_file(network, "runs/demo/checkpoints/last.weights.h5")  # doctest: +SKIP
    """
    source = source or path
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    with warnings.catch_warnings():
        # Keras 3.15 warns about the containers of nested functional models on every load
        warnings.filterwarnings("ignore", message="Skipping nested container")
        try:
            model.load_weights(path)
        except ValueError as err:
            readable = _readable(err, model, source)
            if readable is err:
                raise
            raise readable from err
        except OSError as err:
            if err.filename is not None:
                raise
            raise OSError(
                f"{source} is not a readable .weights.h5 file ({err}): it is empty, truncated or "
                "of another format; copy it again or train again"
            ) from err


def _readable(err: ValueError, model: keras.Model, source: str) -> ValueError:
    """``err`` as a message of at most a few lines."""
    message = str(err)
    shapes = _SHAPES.search(message)
    if shapes is not None:
        model_shape, file_shape, variable = shapes.groups()
        count = _COUNT.search(message)
        layers = f"{count.group(1)} layer(s) do not fit; " if count else ""
        return WeightsMismatchError(
            f"{source} holds the weights of a model with other shapes: {layers}the first, "
            f"variable {variable}, is {file_shape} in the file and {model_shape} in "
            f"{model.name!r}; {_FIX}",
            variable,
            file_shape,
            model_shape,
        )
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(message) <= _LONGEST and len(lines) <= 1:
        return err
    # Keras: "A total of N objects could not be loaded. Example error message for object X:",
    # then that error, then the list of the objects
    shown = lines[:2] if lines and lines[0].endswith(":") else lines[:1]
    text = " ".join(line if len(line) <= _LONGEST else line[:_LONGEST] + " ..." for line in shown)
    return ValueError(f"{source} does not fit {model.name!r}: {text}; {_FIX}")
