"""mtl_keras: multi-task learning for dense prediction in Keras 3 / TensorFlow.

Importing the package loads nothing heavy; its subpackages (``mtl_keras.architectures``, ...) load
Keras and TensorFlow.
"""

from importlib import metadata

try:
    __version__ = metadata.version("mtl_keras")
except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
