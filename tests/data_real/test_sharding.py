"""A TFDS training split sharded by record: each of N workers decodes and augments only the records
of its share of every global batch, and the shares put together are one process's batches."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mtl_keras.data import ShardableSplit, real
from tests.data_real import fakes

tfds.disable_progress_bar()

TASKS = ("semseg", "depth", "normals")
EXAMPLES, BATCH, WORKERS = 8, 4, 2


def _counted(split: ShardableSplit) -> tuple[ShardableSplit, tf.Variable]:
    """``split`` whose decode also counts its calls."""
    calls = tf.Variable(0, dtype=tf.int64)

    def decode(*key):
        calls.assign_add(1)
        return split.decode(*key)

    return ShardableSplit(split.keys, decode, split.batch_size), calls


def test_record_shards_rebuild_the_augmented_global_batches(tmp_path):
    fakes.write_mtan(
        tmp_path / "m", "nyuv2", label_folder="label", num_classes=13, normals=True,
        counts=(EXAMPLES, 2),
    )  # fmt: skip
    builder = real.prepare(
        real.dataset_spec("nyuv2_3task"), data_dir=str(tmp_path / "tfds"),
        manual_dir=str(tmp_path / "m"),
    )  # fmt: skip

    def split():  # what each worker process builds
        return real.make_train_split(
            builder, TASKS, image_size=(4, 6), batch_size=BATCH,
            augment=real.dataset_spec("nyuv2_3task").augment, seed=3, shuffle_seed=1,
        )  # fmt: skip

    reference = list(split().pipeline().repeat(2))
    assert len(reference) == 2 * EXAMPLES // BATCH
    shares = []
    for worker in range(WORKERS):
        counted, calls = _counted(split())
        shares.append(list(counted.worker_stream(WORKERS, worker, epochs=2)))
        assert int(calls.numpy()) == 2 * EXAMPLES // WORKERS  # its share of both epochs, only
    for step, (image, labels) in enumerate(reference):
        np.testing.assert_array_equal(
            np.concatenate([s[step][0] for s in shares]), image, err_msg=f"step {step}"
        )
        for t in TASKS:
            got = np.concatenate([s[step][1][t] for s in shares])
            np.testing.assert_array_equal(got, labels[t], err_msg=f"{t} step {step}")
