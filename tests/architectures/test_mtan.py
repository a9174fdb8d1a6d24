"""MTAN: attention masks, the shared refinement blocks, and the tap-style shared representation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras.architectures import SharedRepresentation, sharing_of
from tests.architectures.tiny import raw_images, tiny_architecture

_probe = tf.zeros([1])
#: the marker must return a new tensor (tf.identity); returning its input object makes the gradient
#: with respect to an early mark include the paths through the later ones
_MARK_IS_INPUT = SharedRepresentation()(_probe) is _probe


def test_attention_masks_select_features_of_the_shared_stage_outputs():
    network = tiny_architecture("mtan")
    names = ["semseg_attention3_act2", "semseg_attention3_apply", "shared_stage3_block1_out"]
    probe = keras.Model(network.input, [network.get_layer(n).output for n in names])
    mask, attended, shared = (np.asarray(t) for t in probe(raw_images(), training=False))
    assert 0.0 < mask.min() and mask.max() < 1.0  # sigmoid
    np.testing.assert_allclose(attended, mask * shared, rtol=1e-6)
    # refinement blocks are shared by the tasks, attention modules are not
    refine = network.get_layer("refine1_conv1")
    assert len(refine._inbound_nodes) >= 2
    assert network.get_layer("depth_attention1_conv1") is not network.get_layer(
        "semseg_attention1_conv1"
    )


@pytest.mark.xfail(
    _MARK_IS_INPUT,
    strict=True,
    reason="SharedRepresentation.call returns x itself; it must return tf.identity(x)",
)
def test_marked_representation_carries_the_whole_encoder_gradient():
    """The marks are taps (the backbone continues from the unmarked tensors), so pulling the
    per-tensor gradients back through the encoder counts every path once."""
    network = tiny_architecture("mtan")
    sharing = sharing_of(network)
    assert len(sharing.representation_layers) == 5  # stem_pool and the 4 stage outputs
    reps = [layer.output for layer in sharing.representation_layers]
    forward = keras.Model(network.input, [network.output, reps])
    encoder = list(sharing.representation_variables)
    with tf.GradientTape(persistent=True) as tape:
        out, z = forward(raw_images(), training=False)
        loss = tf.add_n([tf.reduce_mean(tf.square(v)) for v in out.values()])
    direct = tape.gradient(loss, encoder)
    via_representation = tape.gradient(z, encoder, output_gradients=tape.gradient(loss, z))
    for a, b in zip(direct, via_representation, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)
