"""Properties shared by the gradient-level balancers, each method opting into those it claims.

| method      | permutation | scaling d(cJ) | non-conflicting | equal gradients g -> d |
|-------------|-------------|---------------|-----------------|------------------------|
| mgda        | yes         | c             | yes             | g                      |
| pcgrad      | (random)    | c             | T = 2           | T g                    |
| graddrop    | (random)    | c             | no              | T g                    |
| gradvac     | (random)    | c             | no              | T g                    |
| cagrad      | yes         | c             | no              | (1 + c) g              |
| imtl_g      | yes         | c             | no              | g                      |
| nash_mtl    | yes         | 1 (invariant) | yes             | sqrt(T) g / ||g||      |
| aligned_mtl | yes         | c             | no              | T g                    |
| upgrad      | yes         | c             | yes             | g                      |
| dualproj    | yes         | c             | yes             | g                      |
| config      | yes         | c             | yes (rank T)    | T g                    |
| db_mtl      | yes         | c             | no              | (1 - beta) T g (step 1)|
| gradnorm    | yes         | c             | no              | T g (step 1)           |

Every method: finite (P,) output, zero Jacobian -> zero update, duplicated / linearly dependent /
zero rows stay finite, T = 1 gives the "equal gradients" multiple of the single gradient, and
stochastic methods are deterministic given (seed, step).
"""

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing

GRADIENT_METHODS = [n for n in balancing.available() if balancing.get(n).level == "gradient"]
STOCHASTIC = {"pcgrad", "graddrop", "gradvac"}
SEEDED = {name: {"seed": 3} for name in STOCHASTIC}
DETERMINISTIC = [n for n in GRADIENT_METHODS if n not in STOCHASTIC]
NON_CONFLICTING = ["mgda", "nash_mtl", "upgrad", "dualproj", "config"]
SCALE_INVARIANT = {"nash_mtl"}


def equal_gradient_multiplier(name: str, t: int, norm: float) -> float:
    return {
        "mgda": 1.0,
        "pcgrad": t,
        "graddrop": t,
        "gradvac": t,
        "cagrad": 1.4,
        "imtl_g": 1.0,
        "nash_mtl": np.sqrt(t) / norm,
        "aligned_mtl": t,
        "upgrad": 1.0,
        "dualproj": 1.0,
        "config": t,
        "db_mtl": 0.1 * t,
        "gradnorm": t,
    }[name]


def make(name):
    return balancing.get(name, **SEEDED.get(name, {}))


def run(name, jac, step=0):
    return make(name).aggregate(tf.constant(jac, tf.float32), step=tf.constant(step, tf.int64))


def jacobian(t=3, p=12, seed=0):
    return np.random.default_rng(seed).normal(size=(t, p)).astype(np.float32)


def test_every_method_is_registered_and_gradient_methods_are_covered():
    assert set(GRADIENT_METHODS) == {
        "mgda", "pcgrad", "graddrop", "gradvac", "cagrad", "imtl_g", "nash_mtl",
        "aligned_mtl", "upgrad", "dualproj", "config", "db_mtl", "gradnorm",
    }  # fmt: skip
    assert len(balancing.available()) == 21


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_shape_finiteness_and_zero_jacobian(name):
    jac = jacobian()
    d = run(name, jac).numpy()
    assert d.shape == (12,) and np.all(np.isfinite(d))
    np.testing.assert_array_equal(run(name, np.zeros((3, 12))).numpy(), np.zeros(12))


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_degenerate_rows_stay_finite(name):
    jac = jacobian(4, 10, seed=1)
    duplicated = jac.copy()
    duplicated[1] = duplicated[0]
    dependent = jac.copy()
    dependent[3] = dependent[0] - 2.0 * dependent[2]
    zero_row = jac.copy()
    zero_row[2] = 0.0
    wide = jacobian(5, 3, seed=2)  # more tasks than parameters
    for case in (duplicated, dependent, zero_row, wide):
        d = run(name, case).numpy()
        assert np.all(np.isfinite(d)), (name, case)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
@pytest.mark.parametrize("t", [1, 3])
def test_equal_gradients_give_the_claimed_multiple(name, t):
    g = jacobian(1, 8, seed=4)[0]
    d = run(name, np.stack([g] * t)).numpy()
    expected = equal_gradient_multiplier(name, t, float(np.linalg.norm(g))) * g
    np.testing.assert_allclose(d, expected, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_permutation_equivariance(name):
    jac = jacobian(4, 9, seed=5)
    perm = [2, 0, 3, 1]
    np.testing.assert_allclose(run(name, jac[perm]), run(name, jac), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
@pytest.mark.parametrize("c", [3.7, 0.01])
def test_scaling(name, c):
    jac = jacobian(3, 7, seed=6)
    power = 0 if name in SCALE_INVARIANT else 1
    np.testing.assert_allclose(
        run(name, c * jac), c**power * run(name, jac).numpy(), rtol=2e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", NON_CONFLICTING)
@pytest.mark.parametrize("seed", [7, 8, 9])
def test_non_conflicting_update(name, seed):
    jac = jacobian(4, 6, seed=seed)
    d = run(name, jac).numpy()
    scale = np.linalg.norm(jac, axis=1) * np.linalg.norm(d)
    assert np.all(jac @ d >= -1e-5 * scale), jac @ d


def test_pcgrad_two_tasks_never_conflict():
    for seed in range(5):
        jac = jacobian(2, 5, seed=seed)
        d = run("pcgrad", jac).numpy()
        assert np.all(jac @ d >= -1e-5), jac @ d


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_methods_are_deterministic_given_a_seed(name):
    jac = jacobian(4, 64, seed=10)
    jac[1] = -jac[0] + 0.1 * jac[1]  # conflicts, so random choices matter
    first, again = run(name, jac, step=5).numpy(), run(name, jac, step=5).numpy()
    np.testing.assert_array_equal(first, again)
    others = [run(name, jac, step=s).numpy() for s in range(6, 12)]
    assert any(not np.allclose(first, o) for o in others)
    other_seed = balancing.get(name, seed=4).aggregate(jac, step=tf.constant(5, tf.int64))
    assert balancing.get(name, seed=4).seed == 4 and other_seed.shape == first.shape


@pytest.mark.parametrize("name", [n for n in GRADIENT_METHODS if make(n).gramian_based])
def test_gramian_methods_match_their_aggregate(name):
    b = make(name)
    jac = tf.constant(jacobian(3, 11, seed=11))
    gram = tf.matmul(jac, jac, transpose_b=True)
    b.setup(["a", "b", "c"])
    w = b.weights_from_gramian(gram, tf.ones(3), tf.constant(0, tf.int64))
    assert w.shape == (3,) and w.dtype == tf.float32
    np.testing.assert_allclose(
        tf.linalg.matvec(jac, w, transpose_a=True), run(name, jac.numpy()), rtol=1e-5, atol=1e-6
    )
