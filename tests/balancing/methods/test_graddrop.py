import numpy as np
import tensorflow as tf

from mtl_keras import balancing
from mtl_keras.balancing._linalg import step_seed
from tests.balancing.properties import STEP, GradientMethod, Homogeneous
from tests.utils import two_replicas


class TestGradDrop(GradientMethod, Homogeneous):
    name = "graddrop"

    def equal_gradient_multiple(self, t, norm):
        return t

    def test_keeps_agreeing_signs_and_leak_one_is_the_sum(self):
        jac = np.array([[1.0, 2.0, -1.0], [3.0, -2.0, -4.0]], np.float32)
        d = balancing.get("graddrop", seed=0).aggregate(jac).numpy()
        assert d[0] == 4.0 and d[2] == -5.0 and d[1] in (2.0, -2.0)
        leaky = balancing.get("graddrop", seed=0, leak=1.0).aggregate(jac).numpy()
        np.testing.assert_allclose(leaky, jac.sum(0))

    def test_selects_sign_with_probability_of_its_purity(self):
        # element with purity P = 0.75 keeps the positive gradient in ~75% of the steps
        jac = np.array([[3.0], [-1.0]], np.float32)
        b = balancing.get("graddrop", seed=1)
        draw = tf.function(lambda s: b.aggregate(jac, step=s)[0])
        kept = [float(draw(tf.constant(s, tf.int64))) for s in range(400)]
        assert set(kept) == {3.0, -1.0}
        assert abs(np.mean(np.array(kept) == 3.0) - 0.75) < 0.07

    def test_representation_rule(self):
        rng = np.random.default_rng(3)
        grads = rng.normal(size=(2, 4, 3, 3, 2)).astype(np.float32)  # (T, B, H, W, C)
        rep = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
        b = balancing.get("graddrop", seed=9, leak=[0.0, 0.5])
        b.setup(["a", "b"])
        (out,) = b.representation_gradients([tf.constant(grads)], [tf.constant(rep)], None, STEP)
        signed = (grads * np.sign(rep)[None]).sum(1)
        purity = 0.5 * (1 + signed.sum(0) / np.abs(signed).sum(0))
        u = tf.random.stateless_uniform(purity.shape, seed=step_seed(9, 0, salt=1)).numpy()
        mask = ((purity > u) & (signed > 0)) | ((purity < u) & (signed < 0))
        leak, keep = np.array([0.0, 0.5]), np.array([1.0, 0.5])
        keep = leak[:, None, None, None] + keep[:, None, None, None] * mask
        np.testing.assert_allclose(
            out.numpy(), (grads * keep[:, None]).sum(0), rtol=1e-5, atol=1e-6
        )

    def test_representation_split_batch_equals_whole_batch(self):
        """Halves of the batch with summed sign statistics get exactly the whole batch's masks."""
        rng = np.random.default_rng(4)
        grads = tf.constant(rng.normal(size=(3, 4, 5, 2)), tf.float32)
        rep = tf.constant(rng.normal(size=(4, 5, 2)), tf.float32)
        b = balancing.get("graddrop", seed=2)
        b.setup(["a", "b", "c"])
        (whole,) = b.representation_gradients([grads], [rep], None, STEP)
        total = tf.reduce_sum(grads * tf.sign(rep)[None], 1)
        halves = []
        for part in (slice(0, 2), slice(2, 4)):
            local = tf.reduce_sum(grads[:, part] * tf.sign(rep[part])[None], 1)
            (h,) = b.representation_gradients(
                [grads[:, part]],
                [rep[part]],
                None,
                STEP,
                replica_sum=lambda x, lo=local: x - lo + total,
            )
            halves.append(h)
        np.testing.assert_allclose(tf.concat(halves, 0), whole, rtol=1e-5, atol=1e-6)

    def test_representation_under_two_replicas_equals_one_device(self):
        strategy = two_replicas()
        rng = np.random.default_rng(0)
        grads = tf.constant(rng.normal(size=(3, 4, 5, 2)), tf.float32)
        rep = tf.constant(rng.normal(size=(4, 5, 2)), tf.float32)
        step = tf.constant(2, tf.int64)
        single = self.set_up(seed=1)
        (whole,) = single.representation_gradients([grads], [rep], None, step)
        with strategy.scope():
            mirrored = self.set_up(seed=1)

        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            i = ctx.replica_id_in_sync_group
            local_g, local_rep = grads[:, 2 * i : 2 * i + 2], rep[2 * i : 2 * i + 2]

            def total(x):
                return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)

            return mirrored.representation_gradients(
                [local_g], [local_rep], None, step, replica_sum=total
            )[0]

        halves = strategy.experimental_local_results(
            tf.function(lambda: strategy.run(replica_fn))()
        )
        np.testing.assert_allclose(tf.concat(halves, 0), whole, rtol=1e-5, atol=1e-6)
