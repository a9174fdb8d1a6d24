"""TFDS builders of the survey's datasets; importing this package registers them with TFDS.

Each dataset has a module with a plain-Python reader (``find_root(manual_dir)``,
``list_ids(root, split)``, ``read_example(root, id) -> dict of numpy``) and a
``tfds.core.GeneratorBasedBuilder`` that writes those examples: features ``id``, ``image`` (uint8)
and one feature per task under its canonical name, splits ``train`` and ``validation``. Nothing
downloads: TFDS's ``manual_dir`` holds the extracted archive folder.

=================  ===================================  ==========================================
builder            tasks                                on-disk form
=================  ===================================  ==========================================
``nyud_mt``        semseg (40), depth, normals, edges   survey/ASTMT ``NYUD_MT`` (+ PNG variant)
``pascal_mt``      semseg (21), human_parts (7),        ASTMT ``PASCAL_MT``
                   normals, edges, saliency
``nyuv2_3task``    semseg (13), depth, normals          MTAN/LibMTL ``.npy``
``cityscapes_mt``  semseg (7 / 19), depth               MTAN ``.npy`` (configs ``mtan7``,
                                                        ``mtan19``) or official (``official``)
=================  ===================================  ==========================================

Example:
    >>> import tensorflow_datasets as tfds
    >>> import mtl_keras.data.builders  # registers the builders
    >>> builder = tfds.builder("nyud_mt", data_dir="/tmp/tfds")  # doctest: +SKIP
    >>> builder.download_and_prepare(  # doctest: +SKIP
    ...     download_config=tfds.download.DownloadConfig(manual_dir="/data"))
"""

from mtl_keras.data.builders import cityscapes_mt, nyud_mt, nyuv2_3task, pascal_mt
from mtl_keras.data.builders._io import DatasetFormatError
from mtl_keras.data.builders.cityscapes_mt import CityscapesMt
from mtl_keras.data.builders.nyud_mt import NyudMt
from mtl_keras.data.builders.nyuv2_3task import Nyuv23Task
from mtl_keras.data.builders.pascal_mt import PascalMt

#: Builder name -> reader module.
MODULES = {
    nyud_mt.NAME: nyud_mt,
    pascal_mt.NAME: pascal_mt,
    nyuv2_3task.NAME: nyuv2_3task,
    cityscapes_mt.NAME: cityscapes_mt,
}

__all__ = [
    "MODULES",
    "CityscapesMt",
    "DatasetFormatError",
    "NyudMt",
    "Nyuv23Task",
    "PascalMt",
    "cityscapes_mt",
    "nyud_mt",
    "nyuv2_3task",
    "pascal_mt",
]
