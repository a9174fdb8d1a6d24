"""Training data that N workers decode in shares and that still gives one process's global batches.

A :class:`ShardableSplit` is a training split written as two parts:

* ``keys``: a cheap stream, one element per example, in the order one process trains on them
  (shuffled, each pass anew): the example's index for the synthetic scenes; the still-encoded
  record and its augmentation seed for the TFDS datasets;
* ``decode``: key -> ``(image, {task: label})``, the expensive part (rendering a scene; PNG and
  zlib decoding, augmentation and resizing of a record).

:meth:`ShardableSplit.pipeline` is the one-process training data: every key decoded, batched by
the global batch. :meth:`ShardableSplit.worker_stream` is one worker's share under
``MultiWorkerMirroredStrategy``: every worker runs the same key stream, cuts each global batch of
keys the way ``tf.distribute`` cuts a global batch (``tf.data.experimental.rebatch`` into
``workers * replicas_per_worker`` consecutive slices of ``batch_size / (workers * replicas)``,
then ``shard(workers, worker)``: replica ``k`` of worker ``i`` gets slice ``i + k * workers``)
and decodes only its own slices. So each replica trains on exactly the examples, in the order,
that it would have got from the unsharded pipeline, and the N workers together decode each
global batch once instead of N times.

Example:
    >>> import tensorflow as tf
    >>> split = ShardableSplit(tf.data.Dataset.range(8), lambda i: i * 10, batch_size=4)
    >>> [b.numpy().tolist() for b in split.pipeline()]
    [[0, 10, 20, 30], [40, 50, 60, 70]]
    >>> [b.numpy().tolist() for b in split.worker_stream(2, 1).take(2)]
    [[20, 30], [60, 70]]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from mtl_keras.data.synthetic import SyntheticScenes


@dataclasses.dataclass(frozen=True)
class ShardableSplit:
    """A training split as a key stream and a per-example decoder (see the module docstring).

    Attributes:
        keys: one pass over the split's keys, one element per example, in training order.
        decode: key (a tuple key is passed as positional arguments) -> ``(image, labels)``.
        batch_size: the global batch; batches are full (the last partial one is dropped).
    """

    keys: tf.data.Dataset
    decode: Callable
    batch_size: int

    def pipeline(self) -> tf.data.Dataset:
        """One pass of the split in one process: global batches of decoded examples."""
        ds = self.keys.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(self.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def slices(self, num_workers: int, worker: int, replicas_per_worker: int = 1) -> np.ndarray:
        """Positions, within a global batch, of the examples of worker ``worker``'s replicas."""
        replicas = num_workers * replicas_per_worker
        if not 0 <= worker < num_workers or replicas_per_worker < 1:
            raise ValueError(
                f"expected 0 <= worker < num_workers and replicas_per_worker >= 1, got "
                f"worker={worker}, num_workers={num_workers}, "
                f"replicas_per_worker={replicas_per_worker}"
            )
        if self.batch_size % replicas:
            raise ValueError(
                f"batch_size={self.batch_size} (the global batch) does not split evenly over "
                f"{num_workers} workers x {replicas_per_worker} replicas; use a multiple of "
                f"{replicas}"
            )
        size = self.batch_size // replicas
        first = [(worker + k * num_workers) * size for k in range(replicas_per_worker)]
        return np.concatenate([np.arange(f, f + size) for f in first])

    def worker_stream(
        self,
        num_workers: int,
        worker: int,
        *,
        replicas_per_worker: int = 1,
        skip_batches: int = 0,
        epochs: int | None = None,
    ) -> tf.data.Dataset:
        """Worker ``worker``'s share of the training stream, in per-replica batches.

        The stream repeats the split ``epochs`` times (None: endlessly, as ``fit`` consumes it;
        each pass reshuffled as in :meth:`pipeline`) and starts after ``skip_batches`` global
        batches (a resumed run). Each global step yields ``replicas_per_worker`` batches of
        ``batch_size / (num_workers * replicas_per_worker)`` examples, one per local replica, as
        ``distribute_datasets_from_function`` expects.
        """
        take = tf.constant(self.slices(num_workers, worker, replicas_per_worker), tf.int64)
        per_replica = self.batch_size // (num_workers * replicas_per_worker)

        def mine(*keys):
            return tf.nest.map_structure(lambda t: tf.gather(t, take), keys)

        ds = self.keys.batch(self.batch_size, drop_remainder=True).repeat(epochs)
        ds = ds.skip(skip_batches)
        ds = ds.map(mine).unbatch().map(self.decode, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


class LazyLabels(Mapping):
    """``{task: labels}`` read on first access: a training-label sample only the chief needs."""

    def __init__(self, load: Callable[[], Mapping]):
        self._load = load
        self._labels: dict | None = None

    def _get(self) -> dict:
        if self._labels is None:
            self._labels = dict(self._load())
        return self._labels

    def __getitem__(self, task: str):
        return self._get()[task]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


class SceneRenderer:
    """Examples of one split of :class:`~mtl_keras.data.synthetic.SyntheticScenes`, rendered on
    demand and each at most once per process: the ``decode`` of the synthetic training split.

    Args:
        scenes: the dataset.
        split: ``"train"`` or ``"val"``.
        tasks: the labels returned after the image.
    """

    def __init__(self, scenes: SyntheticScenes, split: str, tasks: Sequence[str]):
        self.scenes, self.split, self.tasks = scenes, split, tuple(tasks)
        self._rendered: dict[int, tuple[np.ndarray, ...]] = {}
        # dtypes and channels of image and labels, from a 2 x 2 render of the same renderer
        probe = SyntheticScenes((2, 2), seed=0).example(0, split)
        height, width = scenes.image_size
        self._specs = [
            tf.TensorSpec((height, width, probe[k].shape[-1]), probe[k].dtype)
            for k in ("image", *self.tasks)
        ]

    def arrays(self, index: int) -> tuple[np.ndarray, ...]:
        """``(image, *labels)`` of example ``index``, rendered on first use."""
        index = int(index)
        found = self._rendered.get(index)
        if found is None:
            example = self.scenes.example(index, self.split)
            found = tuple(example[k] for k in ("image", *self.tasks))
            self._rendered[index] = found
        return found

    def decode(self, index: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The graph side of :meth:`arrays`: ``(image, {task: label})`` of a scalar index."""
        out = tf.numpy_function(self.arrays, [index], [s.dtype for s in self._specs])
        for tensor, spec in zip(out, self._specs, strict=True):
            tensor.set_shape(spec.shape)
        return out[0], dict(zip(self.tasks, out[1:], strict=True))

    def labels(self, count: int) -> dict[str, np.ndarray]:
        """Examples ``0 .. count - 1`` stacked, ``{task: (count, H, W, C)}``."""
        rows = [self.arrays(i)[1:] for i in range(count)]
        return {t: np.stack([r[j] for r in rows]) for j, t in enumerate(self.tasks)}

    def split_of(self, *, batch_size: int, num_examples: int, seed: int) -> ShardableSplit:
        """Examples ``0 .. num_examples - 1``, reshuffled each pass from ``seed``.

        The order is that of ``SyntheticScenes.dataset(..., shuffle=True, seed=seed)``: the same
        shuffle of ``num_examples`` elements, of indices instead of arrays.
        """
        if batch_size < 1 or num_examples < batch_size:
            raise ValueError(
                f"num_examples={num_examples} is smaller than batch_size={batch_size}, so "
                "full batches would yield nothing; raise num_examples or lower batch_size"
            )
        keys = tf.data.Dataset.range(num_examples).shuffle(
            num_examples, seed=seed, reshuffle_each_iteration=True
        )
        return ShardableSplit(keys, self.decode, batch_size)


__all__ = ["LazyLabels", "SceneRenderer", "ShardableSplit"]
