"""Sharded training input: N workers decode only their share of each global batch, and their
shares put together are exactly the global batches of one process (same examples, same order)."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops.distribute import batch_sizes_for_worker
from tensorflow.python.distribute import input_ops

from mtl_keras.data import ShardableSplit, load_synthetic
from mtl_keras.data.synthetic import SyntheticScenes

TASKS = ("semseg", "depth")
EXAMPLES, BATCH, STEPS = 16, 8, 2  # two global batches per epoch


def _bundle():
    """A fresh bundle, as every worker process builds its own."""
    return load_synthetic(
        TASKS, image_size=(8, 8), train_examples=EXAMPLES, val_examples=2, batch_size=BATCH,
        seed=0, shuffle_seed=3,
    )  # fmt: skip


@pytest.fixture
def rendered(monkeypatch):
    """The training examples rendered at the test's image size, in order."""
    seen = []
    example = SyntheticScenes.example

    def counting(self, index, split="train"):
        if split == "train" and self.image_size == (8, 8):
            seen.append(int(index))
        return example(self, index, split)

    monkeypatch.setattr(SyntheticScenes, "example", counting)
    return seen


def _assemble(split, workers, replicas, streams):
    """Each global step's batch put together from every worker's replica batches."""
    steps = []
    for parts in zip(*streams, strict=True):  # one element per worker: its K replica batches
        image = np.zeros((BATCH, 8, 8, 3), np.uint8)
        labels = {t: None for t in TASKS}
        for worker, batches in enumerate(parts):
            where = split.slices(workers, worker, replicas)
            image[where] = np.concatenate([b[0] for b in batches])
            for t in TASKS:
                got = np.concatenate([b[1][t] for b in batches])
                if labels[t] is None:
                    labels[t] = np.zeros((BATCH, *got.shape[1:]), got.dtype)
                labels[t][where] = got
        steps.append((image, labels))
    return steps


def _per_step(stream, replicas):
    """Group a worker's per-replica batches by global step."""
    batches = list(stream)
    return [batches[i : i + replicas] for i in range(0, len(batches), replicas)]


@pytest.mark.parametrize("workers, replicas", [(2, 1), (2, 2), (4, 1)])
def test_worker_shares_rebuild_the_global_batches_and_render_only_the_share(
    workers, replicas, rendered
):
    one = _bundle()
    reference = list(one.train.repeat(2))  # two epochs of one process
    assert len(reference) == 2 * STEPS
    bundles = [_bundle() for _ in range(workers)]
    split = bundles[0].train_split
    streams, shares = [], []
    for i, b in enumerate(bundles):  # epoch 1, worker by worker
        before = len(rendered)
        stream = b.train_split.worker_stream(workers, i, replicas_per_worker=replicas, epochs=1)
        streams.append(_per_step(stream, replicas))
        shares.append(rendered[before:])
    # every worker rendered exactly its share, once; the shares are disjoint and cover all
    assert [len(s) for s in shares] == [EXAMPLES // workers] * workers
    assert sorted(i for s in shares for i in s) == list(range(EXAMPLES))
    steps = _assemble(split, workers, replicas, streams)
    # epoch 2, reshuffled, as the fresh processes of a run resumed there stream it
    later = [
        _per_step(
            b.train_split.worker_stream(
                workers, i, replicas_per_worker=replicas, skip_batches=STEPS, epochs=2
            ),
            replicas,
        )
        for i, b in enumerate(_bundle() for _ in range(workers))
    ]
    steps += _assemble(split, workers, replicas, later)
    for s, ((image, labels), (want_image, want_labels)) in enumerate(zip(steps, reference)):
        np.testing.assert_array_equal(image, want_image, err_msg=f"step {s}")
        for t in TASKS:
            np.testing.assert_array_equal(labels[t], want_labels[t].numpy(), err_msg=f"{t} {s}")


def test_one_process_pipeline_is_the_eager_synthetic_dataset():
    """The lazily rendered training split gives the batches ``SyntheticScenes.dataset`` gives."""
    eager = SyntheticScenes((8, 8), seed=0).dataset(
        "train", tasks=TASKS, batch_size=BATCH, num_examples=EXAMPLES, shuffle=True, seed=3
    )
    for (a, la), (b, lb) in zip(_bundle().train.repeat(3), eager.repeat(3), strict=True):
        np.testing.assert_array_equal(a, b)
        for t in TASKS:
            np.testing.assert_array_equal(la[t], lb[t])


@pytest.mark.parametrize("workers, replicas", [(2, 1), (2, 2), (3, 2)])
def test_slices_are_those_tf_distribute_gives_each_replica(workers, replicas):
    """``tf.distribute``'s rebatch and data shard of a global batch (what
    ``experimental_distribute_dataset`` does under MultiWorkerMirroredStrategy) hand worker
    ``i``'s replicas the positions :meth:`ShardableSplit.slices` names."""
    batch = 4 * workers * replicas
    split = ShardableSplit(tf.data.Dataset.range(2 * batch), lambda i: i, batch)
    for worker in range(workers):
        ds = tf.data.Dataset.range(batch).batch(batch, drop_remainder=True)
        ds = ds.rebatch(batch_sizes_for_worker(batch, workers, replicas, worker))
        ds = input_ops.auto_shard_dataset(ds, workers, worker, workers * replicas)
        given = np.concatenate([b.numpy() for b in ds])
        np.testing.assert_array_equal(given, split.slices(workers, worker, replicas))


def test_uneven_shares_are_refused():
    split = ShardableSplit(tf.data.Dataset.range(12), lambda i: i, 6)
    with pytest.raises(ValueError, match="batch_size=6 .* 4 workers x 1 replicas; use a multiple"):
        split.worker_stream(4, 0)
    with pytest.raises(ValueError, match="0 <= worker < num_workers"):
        split.worker_stream(2, 2)
