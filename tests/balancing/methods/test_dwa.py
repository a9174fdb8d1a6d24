import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.methods._loss import STEP, set_up
from tests.balancing.properties import Method


class TestDynamicWeightAverage(Method):
    name = "dwa"
    variants = ({"mode": "window", "window": 1},)

    def test_epoch_form_after_two_epochs(self):
        b = set_up("dwa")
        for losses in ([4.0, 2.0], [2.0, 2.0]):  # epoch 1 mean: (3, 2)
            assert np.all(b.combine(tf.ones(2), tf.constant(losses), STEP)[1].numpy() == 1.0)
        b.on_epoch_end()
        b.combine(tf.ones(2), tf.constant([1.5, 2.0]), STEP)  # epoch 2 mean: (1.5, 2)
        b.on_epoch_end()
        _, w = b.combine(tf.constant([1.0, 1.0]), tf.constant([1.0, 1.0]), STEP)
        r = np.array([1.5 / 3.0, 2.0 / 2.0])
        np.testing.assert_allclose(w, 2 * np.exp(r / 2) / np.exp(r / 2).sum(), rtol=1e-6)
        b.on_epoch_end()  # epoch 3 mean (1, 1): ratios (1/1.5, 1/2)
        objective, w = b.combine(tf.constant([1.0, 3.0]), tf.constant([1.0, 3.0]), STEP)
        r = np.array([1.0 / 1.5, 1.0 / 2.0])
        expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
        np.testing.assert_allclose(w, expected, rtol=1e-6)
        np.testing.assert_allclose(float(objective), expected @ [1.0, 3.0], rtol=1e-6)

    def test_epoch_end_without_steps_keeps_history(self):
        b = set_up("dwa")
        b.on_epoch_end()
        assert int(b.epochs_seen) == 0

    def test_window_form_and_mean_reduction(self):
        b = set_up("dwa", mode="window", window=2, reduction="mean")
        history = [[4.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]]
        for i, losses in enumerate(history):
            objective, w = b.combine(tf.constant(losses), tf.constant(losses), STEP)
            if i < 3:
                np.testing.assert_array_equal(w, [1.0, 1.0])
        r = np.array([(2.0 + 1.0) / (4.0 + 2.0), (2.0 + 2.0) / (1.0 + 1.0)])
        expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
        np.testing.assert_allclose(w, expected, rtol=1e-6)
        np.testing.assert_allclose(float(objective), expected @ [1.0, 2.0] / 2, rtol=1e-6)
        with pytest.raises(ValueError, match="valid: epoch, window"):
            balancing.get("dwa", mode="steps")
