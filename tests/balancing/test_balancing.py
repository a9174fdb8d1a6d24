import itertools

import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing


def test_registry():
    assert {"fixed", "mgda"} <= set(balancing.available())
    with pytest.raises(ValueError, match="valid balancers: .*fixed.*mgda"):
        balancing.get("mgda_ub_typo")


def test_fixed_uniform_mapping_and_sequence():
    b = balancing.get("fixed")
    b.setup(["a", "b", "c"])
    total, w = b.combine(tf.constant([1.0, 2.0, 3.0]), None, 0)
    assert float(total) == 6.0 and w.numpy().tolist() == [1.0, 1.0, 1.0]
    b = balancing.get("fixed", weights={"b": 3.0})
    b.setup(["a", "b"])
    assert float(b.combine(tf.constant([1.0, 2.0]), None, 0)[0]) == 7.0
    with pytest.raises(ValueError, match="unknown tasks"):
        balancing.get("fixed", weights={"z": 1.0}).setup(["a"])
    with pytest.raises(ValueError, match="2 values for 3 tasks"):
        balancing.get("fixed", weights=[1.0, 2.0]).setup(["a", "b", "c"])


def test_mgda_two_orthogonal_gradients():
    # min ||a1 e1 + 2 a2 e2||^2 on the simplex: a1 = 0.8, a2 = 0.2 -> update (0.8, 0.4)
    update = balancing.get("mgda").aggregate(tf.constant([[1.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(update.numpy(), [0.8, 0.4], atol=1e-6)


def test_mgda_min_norm_point_is_non_conflicting_and_optimal():
    rng = np.random.default_rng(0)
    jac = tf.constant(rng.normal(size=(4, 30)), tf.float32)
    m = balancing.get("mgda", max_iter=1000, tol=1e-9)
    d = m.aggregate(jac).numpy()
    # KKT of the min-norm problem: g_i . d >= ||d||^2 for every task
    assert np.all(jac.numpy() @ d >= np.dot(d, d) - 1e-4)
    # no other point of the simplex (on a grid) has a smaller norm
    best = min(
        np.linalg.norm(np.array(a) @ jac.numpy())
        for a in itertools.product(np.linspace(0, 1, 11), repeat=4)
        if abs(sum(a) - 1) < 1e-9
    )
    assert np.linalg.norm(d) <= best + 1e-4


def test_mgda_permutation_equivariant_and_degenerate_cases():
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(3, 10)).astype(np.float32)
    m = balancing.get("mgda")
    d = m.aggregate(tf.constant(jac)).numpy()
    d_perm = balancing.get("mgda").aggregate(tf.constant(jac[[2, 0, 1]])).numpy()
    np.testing.assert_allclose(d, d_perm, atol=1e-5)
    same = np.stack([jac[0]] * 3)
    np.testing.assert_allclose(
        balancing.get("mgda").aggregate(tf.constant(same)), jac[0], atol=1e-5
    )
    single = balancing.get("mgda").aggregate(tf.constant(jac[:1])).numpy()
    np.testing.assert_allclose(single, jac[0], atol=1e-6)
    zeros = balancing.get("mgda").aggregate(tf.zeros([3, 10])).numpy()
    assert np.all(np.isfinite(zeros)) and np.all(zeros == 0)


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_normalizations(normalization):
    g = tf.constant([[1.0, 0.0], [0.0, 2.0]])
    m = balancing.get("mgda", normalization=normalization)
    w = m.weights_from_gramian(
        tf.matmul(g, g, transpose_b=True), tf.constant([2.0, 1.0]), 0
    ).numpy()
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    if normalization == "l2":  # unit gradients: equal alphas 1/2, divided by the norms
        np.testing.assert_allclose(w, [0.5, 0.25], atol=1e-6)
    with pytest.raises(ValueError, match="valid: none, l2, loss, loss\\+"):
        balancing.get("mgda", normalization="unit")


def test_aggregate_rejects_non_matrix():
    with pytest.raises(ValueError, match=r"\(T, P\) Jacobian"):
        balancing.get("mgda").aggregate(tf.zeros([3]))
