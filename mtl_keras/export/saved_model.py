"""SavedModel export for TensorFlow Serving.

Layout: ``<export_dir>/<name>/<version>/`` with a ``serving_default`` signature that takes uint8
images ``[B, H, W, 3]`` of any size and returns, at that size, every task's serving outputs
(``TaskSpec.serve``): class maps and probabilities, metric depth, unit normals, edge and saliency
probabilities. Deep-supervision outputs are dropped. The image is resized to the training size the
network expects, predicted, and the raw predictions are resized back (bilinear) before activation.
An empty batch ``[0, H, W, 3]`` returns empty outputs. A ``metadata`` signature and label files in
``assets/`` name the tasks and their classes (:mod:`mtl_keras.export.metadata`).

Exports are atomic: the SavedModel is written into a hidden temporary folder next to the target
(TF Serving only loads numeric version folders) and renamed into place when complete. The folder
gets the usual mode of a new folder (``0o777`` less the umask), so a server running as another
user can read it.
"""

from __future__ import annotations

import errno
import numbers
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping

import keras
import tensorflow as tf

from mtl_keras.architectures.base import is_auxiliary
from mtl_keras.export.metadata import metadata_function
from mtl_keras.tasks import TaskSpec


def served_outputs(tasks: Mapping[str, TaskSpec], outputs: Mapping) -> dict:
    """Every task's ``spec.serve`` of its raw output (``semseg_class``, ``semseg_probs``,
    ``depth``, ``normals``, ...), deep-supervision outputs left out: what the SavedModel returns
    (and ``MultiTaskModel.predict``)."""
    served = {}
    for name, spec in tasks.items():
        if not is_auxiliary(name):
            served.update(spec.serve(outputs[name]))
    return served


def serving_function(network: keras.Model, tasks: dict[str, TaskSpec], image_size):
    """The serving computation: uint8 ``[B, H, W, 3]`` -> dict of outputs at ``H x W``."""
    size = tuple(int(v) for v in image_size)

    def serve(images):
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise TypeError(f"serving expects uint8 images, got {images.dtype}")
        count, out_size = tf.shape(images)[0], tf.shape(images)[1:3]
        x = tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear")
        # an empty batch runs one blank image (batch normalisation fails on none), then drops it
        x = tf.cond(count > 0, lambda: x, lambda: tf.zeros([1, *size, 3], tf.float32))
        raw = network(x, training=False)
        resized = {
            name: tf.image.resize(tf.cast(raw[name], tf.float32), out_size, method="bilinear")[
                :count
            ]
            for name in tasks
            if not is_auxiliary(name)
        }
        return served_outputs(tasks, resized)

    return serve


def _next_version(root: str) -> int:
    if not os.path.isdir(root):
        return 1
    versions = [int(d) for d in os.listdir(root) if d.isdigit()]
    return max(versions, default=0) + 1


def _new_hidden_folder(root: str, version) -> str:
    """A new empty folder ``root/.tmp-<version>-<random>`` with the umask's mode.

    ``os.mkdir`` applies the umask (``tempfile.mkdtemp`` would make it ``0o700``, and the mode
    stays with the folder when it is renamed into place).
    """
    while True:
        path = os.path.join(root, f".tmp-{version}-{secrets.token_hex(6)}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


def _archive(network: keras.Model, tasks: dict[str, TaskSpec], image_size, labels: str):
    """The SavedModel: ``serving_default`` and ``metadata`` (its label files in ``labels``)."""
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(
        name="serving_default",
        fn=serving_function(network, tasks, image_size),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    metadata, tables = metadata_function(tasks, labels)
    for table in tables:
        archive.track(table)
    archive.add_endpoint(name="metadata", fn=metadata, input_signature=[])
    return archive


def export_saved_model(
    network: keras.Model,
    tasks: dict[str, TaskSpec],
    export_dir: str,
    name: str,
    *,
    image_size,
    version: int | None = None,
) -> str:
    """Export ``network`` to ``export_dir/name/version`` atomically and return that path.

    Raises:
        ValueError: ``version`` is not an integer >= 1.
        FileExistsError: the target version folder exists.
        OSError: a folder cannot be created or written (a file in the way, no permission, a full
            disk); the error names the path.
    """
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1
    ):
        raise ValueError(
            f"export version must be an integer >= 1 (TF Serving loads numeric version folders), "
            f"got {version!r}"
        )
    root = os.path.join(export_dir, name)
    if os.path.exists(root) and not os.path.isdir(root):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), root)
    os.makedirs(root, exist_ok=True)
    version = _next_version(root) if version is None else int(version)
    target = os.path.join(root, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"export target {target} exists; choose another version or remove it")
    return write_saved_model(network, tasks, target, image_size=image_size)


def write_saved_model(network: keras.Model, tasks: dict[str, TaskSpec], target: str, *, image_size):
    """Write the served SavedModel (``serving_default`` and ``metadata``) to the new folder
    ``target``, atomically: into a hidden sibling folder, then renamed. Returns ``target``.

    Raises:
        FileExistsError: ``target`` exists.
        OSError: a folder cannot be created or written; the error names the path.
    """
    if os.path.exists(target):
        raise FileExistsError(f"export target {target} exists; choose another path or remove it")
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = _new_hidden_folder(parent, os.path.basename(os.path.abspath(target)))
    try:
        try:
            with tempfile.TemporaryDirectory() as labels:  # copied into the export's assets/
                _archive(network, tasks, image_size, labels).write_out(tmp, verbose=False)
        except tf.errors.PermissionDeniedError as err:
            raise PermissionError(errno.EACCES, err.message, target) from err
        except tf.errors.ResourceExhaustedError as err:  # how TensorFlow reports ENOSPC
            raise OSError(errno.ENOSPC, err.message, target) from err
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target
