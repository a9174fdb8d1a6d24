"""What a served model's outputs mean: its task names and class names, shipped with the SavedModel.

An export carries them twice, for the two kinds of client:

* as assets, plain text files of one name per line (the usual shape of a label file):
  ``assets/tasks.txt`` lists the tasks in output order, ``assets/<task>_class_names.txt`` the
  classes of each task that predicts classes (``<task>_class`` is an index into it);
* as a ``metadata`` signature taking no input, which reads those files through lookup tables and
  returns ``tasks`` (``[T]`` strings), ``<task>_class_names`` (``[C]`` strings) per class task, and
  ``generic_class_names``: the tasks whose dataset names no class, which get ``class_0``,
  ``class_1``, ... (a warning says so when exporting).

Example:
    >>> loaded = tf.saved_model.load("saved_models/demo/1")  # doctest: +SKIP
    >>> loaded.signatures["metadata"]()["semseg_class_names"]  # doctest: +SKIP
    <tf.Tensor: shape=(5,), dtype=string, numpy=array([b'floor', b'wall', ...])>
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import tensorflow as tf

from mtl_keras.architectures.base import is_auxiliary
from mtl_keras.tasks import TaskSpec

_log = logging.getLogger(__name__)

TASKS_FILE = "tasks.txt"


def class_names(spec: TaskSpec) -> tuple[tuple[str, ...], bool] | None:
    """``(names, generic)`` of a class task (``spec.num_classes`` set), else ``None``.

    The names are the spec's ``class_names``; without them, ``class_0 .. class_{C-1}``
    (``generic`` is then true).

    Raises:
        ValueError: the spec's names are not one line each, or not ``num_classes`` of them.
    """
    if not spec.num_classes:
        return None
    if spec.class_names is None:
        return tuple(f"class_{i}" for i in range(spec.num_classes)), True
    names = tuple(str(n) for n in spec.class_names)
    if len(names) != spec.num_classes or any("\n" in n or "\r" in n for n in names):
        raise ValueError(
            f"task {spec.name!r}: class_names must be {spec.num_classes} names without line "
            f"breaks (one per class), got {names!r}; fix the task's class_names option"
        )
    return names, False


def _line_table(path: str) -> tf.lookup.StaticHashTable:
    """``{line number: line}`` of a text file; the file becomes an asset of the SavedModel."""
    index = tf.lookup.TextFileIndex
    init = tf.lookup.TextFileInitializer(
        path, tf.int64, index.LINE_NUMBER, tf.string, index.WHOLE_LINE
    )
    return tf.lookup.StaticHashTable(init, default_value="")


def _write_lines(path: str, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return path


def metadata_function(tasks: Mapping[str, TaskSpec], folder: str):
    """``(fn, tables)``: the ``metadata`` signature's function and the lookup tables it reads.

    The label files are written to ``folder`` (a temporary folder: saving copies them into the
    SavedModel's ``assets/``); track every table in the export archive so they are saved.
    """
    served = [name for name in tasks if not is_auxiliary(name)]
    tables = {
        "tasks": (_line_table(_write_lines(os.path.join(folder, TASKS_FILE), served)), len(served))
    }
    generic = []
    for name in served:
        found = class_names(tasks[name])
        if found is None:
            continue
        names, is_generic = found
        path = _write_lines(os.path.join(folder, f"{name}_class_names.txt"), names)
        tables[f"{name}_class_names"] = (_line_table(path), len(names))
        if is_generic:
            generic.append(name)
    if generic:
        _log.warning(
            "the dataset names no class of %s; the export labels them class_0, class_1, ... "
            "(set task_options={task: {'class_names': [...]}} for real names)",
            ", ".join(generic),
        )

    def metadata():
        out = {key: table.lookup(tf.range(n, dtype=tf.int64)) for key, (table, n) in tables.items()}
        out["generic_class_names"] = tf.constant(generic, tf.string, shape=[len(generic)])
        return out

    return metadata, [table for table, _ in tables.values()]
