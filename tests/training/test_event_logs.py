"""TensorBoard logs committed with the resume state: a roll-back to an epoch's record leaves
exactly the summaries written up to that epoch, in whole records."""

import tensorflow as tf

from mtl_keras.training.event_logs import LogCommit, log_sizes, roll_back
from tests.scale.conftest import logged


def _write(writer, epoch):
    with writer.as_default():
        tf.summary.scalar("epoch_loss", float(epoch), step=epoch)
    writer.flush()


def test_roll_back_cuts_files_to_the_epoch_record_and_removes_newer_ones(tmp_path):
    logs, backup = tmp_path / "tensorboard", tmp_path / "backup"
    writer = tf.summary.create_file_writer(str(logs / "train"))
    commit = LogCommit(str(logs), str(backup))
    commit.on_train_begin()  # a fresh run records its start
    for epoch in range(2):
        _write(writer, epoch)
        commit.on_epoch_end(epoch)
    _write(writer, 2)  # epoch 3 logged, then killed before its resume state
    with open(sorted((logs / "train").iterdir())[0], "ab") as f:
        f.write(b"\x00\x01half a record")
    late = tf.summary.create_file_writer(str(logs / "validation"))
    _write(late, 2)
    assert sorted(p.name for p in backup.iterdir()) == ["logs-0001.json", "logs-0002.json"]

    changed = roll_back(str(logs), str(backup), 2)
    assert len(changed) == 2  # the train file cut, the validation file removed
    assert sorted(logged(str(logs))) == [("train", "epoch_loss", 0), ("train", "epoch_loss", 1)]
    roll_back(str(logs), str(backup), 1)
    assert sorted(logged(str(logs))) == [("train", "epoch_loss", 0)]
    assert roll_back(str(logs), str(tmp_path / "none"), 1) == []  # no record: left alone
    assert log_sizes(str(logs))
    # no start record: an attempt killed before it (its HParams, say) is removed
    assert roll_back(str(logs), str(tmp_path / "none"), 0) and not log_sizes(str(logs))


def test_a_non_chief_commits_nothing(tmp_path):
    commit = LogCommit(str(tmp_path / "logs"), str(tmp_path / "backup"), write=False)
    commit.on_train_begin()
    commit.on_epoch_end(0)
    assert not (tmp_path / "backup").exists()
