"""The checks every balancer passes and the properties a method claims, as test-class mixins.

Each registered method has one test class, in ``tests/balancing/methods/test_<name>.py``, made of
the checks every method passes and the properties it claims (as TorchJD's property tests)::

    class TestUPGrad(GradientMethod, PermutationInvariant, Homogeneous, NonConflicting):
        name = "upgrad"

        def equal_gradient_multiple(self, t, norm):
            return 1.0

* :class:`Method`, every balancer: graph = eager, two replicas = one device, config and state
  round trip, state in float32 under mixed precision, ``stochastic`` declared with a ``seed``;
  for its ``kwargs`` and for each of its ``variants`` (configurations with other state).
* :class:`GradientMethod`, every gradient-level balancer: a finite (P,) update, zero Jacobian ->
  zero update, duplicated / linearly dependent / zero rows stay finite, T = 1 and T equal
  gradients give the claimed multiple of the gradient, any task count on every call when
  stateless (a clear refusal when stateful), deterministic given (seed, step), and Gramian
  weights equal to ``aggregate``.
* Claims: :class:`PermutationInvariant`, :class:`Homogeneous` (``d(cJ) = c^p d(J)``),
  :class:`NonConflicting`.

Stochastic methods (``Balancer.stochastic``) are built with ``seed=3``.
``tests/balancing/test_balancing.py`` checks that every registered method has a test class.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.utils import two_replicas

TASKS = ("a", "b", "c")
STEP = tf.constant(0, tf.int64)
STATE_STEPS = 3


def jacobian(t: int = 3, p: int = 12, seed: int = 0) -> np.ndarray:
    return rand(t, p, seed).astype(np.float32)


def rand(t: int, p: int, seed: int) -> np.ndarray:
    """A (t, p) float64 Gaussian matrix (analytic references are computed in float64)."""
    return np.random.default_rng(seed).normal(size=(t, p))


def gram(jac: np.ndarray) -> tf.Tensor:
    return tf.constant(jac @ jac.T, tf.float32)


def state_inputs(step: int):
    """One step's (Jacobian, losses, step), with two conflicting tasks."""
    rng = np.random.default_rng(step)
    jac = rng.normal(size=(3, 6)).astype(np.float32)
    jac[1] = -jac[0] + 0.2 * jac[1]
    losses = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    return tf.constant(jac), tf.constant(losses), tf.constant(step, tf.int64)


def one_step(b, jac, losses, step):
    """What a trainer does with a balancer in one step; returns the output and any weights."""
    if b.level == "loss":
        objective, w = b.combine(losses, losses, step)
        if b.needs_losses_after_step:
            b.after_step(losses, 0.9 * losses, step)
        return tf.concat([objective[None], w], 0)
    return b.aggregate(jac, losses, step)


def state(b) -> list[np.ndarray]:
    return [np.array(v) for v in b.weights]


class Method:
    """Every balancer: runs in a graph, agrees across replicas, saves and restores its state.

    Attributes:
        name: the registered name.
        kwargs: constructor arguments of the checks (``seed=3`` is added for stochastic methods).
        variants: other configurations whose state differs, checked by the state tests too.
    """

    name: str
    kwargs: dict = {}
    variants: tuple[dict, ...] = ()

    def make(self, **overrides) -> balancing.Balancer:
        seeded = {"seed": 3} if balancing.BALANCERS[self.name].stochastic else {}
        return balancing.get(self.name, **{**seeded, **self.kwargs, **overrides})

    def set_up(self, **overrides) -> balancing.Balancer:
        b = self.make(**overrides)
        b.setup(TASKS)
        if b.level == "gradient":
            b.build_parameter_state([2, 4])
        return b

    def test_stochastic_methods_are_declared_and_take_a_seed(self):
        b = self.make()
        assert ("seed" in b.get_config()) == type(b).stochastic

    def test_graph_matches_eager_and_state_agrees(self, config):
        eager, graph = self.set_up(**config), self.set_up(**config)
        run_graph = tf.function(lambda *args: one_step(graph, *args))
        for step in range(STATE_STEPS):
            a = one_step(eager, *state_inputs(step))
            b = run_graph(*state_inputs(step))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            eager.on_epoch_end()
            graph.on_epoch_end()
        for x, y in zip(state(eager), state(graph), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)

    def test_two_replicas_compute_what_one_device_computes(self, config):
        strategy = two_replicas()
        single = self.set_up(**config)
        with strategy.scope():
            mirrored = self.set_up(**config)

        @tf.function
        def distributed(jac, losses, step):
            return strategy.run(lambda: one_step(mirrored, jac, losses, step))

        for step in range(STATE_STEPS):
            expected = one_step(single, *state_inputs(step)).numpy()
            per_replica = strategy.experimental_local_results(distributed(*state_inputs(step)))
            assert len(per_replica) == 2
            for out in per_replica:
                np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
            single.on_epoch_end()
            mirrored.on_epoch_end()  # eager, cross-replica context: as a Keras callback calls it
        for x, y in zip(state(single), state(mirrored), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)

    def test_config_round_trip_and_state_restore(self, config):
        b = self.set_up(**config)
        clone = type(b).from_config(b.get_config())
        assert clone.get_config() == b.get_config()
        for step in range(2):
            one_step(b, *state_inputs(step))
        restored = self.set_up(**config)
        restored.set_weights(b.get_weights())
        np.testing.assert_allclose(
            one_step(restored, *state_inputs(5)), one_step(b, *state_inputs(5)), 1e-6, 1e-7
        )

    def test_mixed_precision_policy_keeps_state_in_float32(self):
        policy = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_float16")
        try:
            b = self.set_up()
            jac, losses, step = state_inputs(0)
            out = one_step(b, tf.cast(jac, tf.float16), losses, step)  # trainer's losses: float32
            reference = one_step(self.set_up(), jac, losses, step)
        finally:
            keras.config.set_dtype_policy(policy)
        assert all(v.dtype in ("float32", "int64") for v in b.weights)
        np.testing.assert_allclose(tf.cast(out, tf.float32), reference, rtol=2e-2, atol=2e-2)


class GradientMethod(Method):
    """Every gradient-level balancer, used on its own through ``aggregate``."""

    def equal_gradient_multiple(self, t: int, norm: float) -> float:
        """The update for T copies of a gradient g of norm ``norm`` is this multiple of g."""
        raise NotImplementedError(
            f"{type(self).__name__} must say what T equal gradients give: define "
            "equal_gradient_multiple(self, t, norm)"
        )

    def run(self, jac, step: int = 0, **overrides) -> tf.Tensor:
        jac = tf.constant(jac, tf.float32)
        return self.make(**overrides).aggregate(jac, step=tf.constant(step, tf.int64))

    def test_is_a_gradient_method(self):
        assert self.make().level == "gradient"

    def test_shape_finiteness_and_zero_jacobian(self):
        d = self.run(jacobian()).numpy()
        assert d.shape == (12,) and np.all(np.isfinite(d))
        np.testing.assert_array_equal(self.run(np.zeros((3, 12))).numpy(), np.zeros(12))

    def test_degenerate_rows_stay_finite(self):
        jac = jacobian(4, 10, seed=1)
        duplicated = jac.copy()
        duplicated[1] = duplicated[0]
        dependent = jac.copy()
        dependent[3] = dependent[0] - 2.0 * dependent[2]
        zero_row = jac.copy()
        zero_row[2] = 0.0
        wide = jacobian(5, 3, seed=2)  # more tasks than parameters
        for case in (duplicated, dependent, zero_row, wide):
            d = self.run(case).numpy()
            assert np.all(np.isfinite(d)), case

    @pytest.mark.parametrize("t", [1, 3])
    def test_equal_gradients_give_the_claimed_multiple(self, t):
        g = jacobian(1, 8, seed=4)[0]
        d = self.run(np.stack([g] * t)).numpy()
        expected = self.equal_gradient_multiple(t, float(np.linalg.norm(g))) * g
        np.testing.assert_allclose(d, expected, rtol=2e-4, atol=1e-5)

    def test_deterministic_given_a_seed(self):
        jac = jacobian(4, 64, seed=10)
        jac[1] = -jac[0] + 0.1 * jac[1]  # conflicts, so random choices matter
        first, again = self.run(jac, step=5).numpy(), self.run(jac, step=5).numpy()
        np.testing.assert_array_equal(first, again)
        if type(self.make()).stochastic:
            others = [self.run(jac, step=s).numpy() for s in range(6, 12)]
            assert any(not np.allclose(first, o) for o in others)
            assert self.make(seed=4).seed == 4
            assert self.run(jac, step=5, seed=4).shape == first.shape

    def test_any_task_count_on_every_call_unless_stateful(self):
        two, three = jacobian(2, 6, seed=12), jacobian(3, 6, seed=13)
        b = self.make()
        d2 = b.aggregate(two, step=STEP).numpy()
        if b.stateful:
            with pytest.raises(ValueError, match="state for the 2 tasks it was set up for"):
                b.aggregate(three, step=STEP)
            return
        d3 = b.aggregate(three, step=STEP).numpy()
        np.testing.assert_allclose(d3, self.make().aggregate(three, step=STEP), 1e-6, 1e-7)
        np.testing.assert_allclose(b.aggregate(two, step=STEP), d2, 1e-6, 1e-7)

    def test_gramian_weights_match_aggregate(self):
        b = self.make()
        if not b.gramian_based:
            pytest.skip(f"{type(b).__name__} is not weights from the Gramian: {b.needs.paths}")
        jac = tf.constant(jacobian(3, 11, seed=11))
        gram = tf.matmul(jac, jac, transpose_b=True)
        b.setup(["a", "b", "c"])
        w = b.weights_from_gramian(gram, tf.ones(3), STEP)
        assert w.shape == (3,) and w.dtype == tf.float32
        np.testing.assert_allclose(
            tf.linalg.matvec(jac, w, transpose_a=True), self.run(jac.numpy()), 1e-5, 1e-6
        )


class PermutationInvariant:
    """Reordering the tasks leaves the update unchanged (the weights are reordered with them)."""

    def test_permutation_invariance(self):
        jac = jacobian(4, 9, seed=5)
        perm = [2, 0, 3, 1]
        np.testing.assert_allclose(self.run(jac[perm]), self.run(jac), rtol=1e-4, atol=1e-5)


class Homogeneous:
    """``d(cJ) = c^p d(J)`` for ``c > 0``; ``p = scaling_power`` (1: linear under scaling)."""

    scaling_power: float = 1.0

    @pytest.mark.parametrize("c", [3.7, 0.01])
    def test_scaling(self, c):
        jac = jacobian(3, 7, seed=6)
        expected = c**self.scaling_power * self.run(jac).numpy()
        np.testing.assert_allclose(self.run(c * jac), expected, rtol=2e-4, atol=1e-6)


class NonConflicting:
    """The update never conflicts with a task: ``g_i . d >= 0`` for every i."""

    @pytest.mark.parametrize("seed", [7, 8, 9])
    def test_non_conflicting_update(self, seed):
        jac = jacobian(4, 6, seed=seed)
        d = self.run(jac).numpy()
        scale = np.linalg.norm(jac, axis=1) * np.linalg.norm(d)
        assert np.all(jac @ d >= -1e-5 * scale), jac @ d
