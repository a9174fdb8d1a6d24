"""Analytic cases of each gradient-level method, against closed forms and plain NumPy references."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize

from mtl_keras import balancing
from mtl_keras.balancing._linalg import partner_orders, step_seed
from mtl_keras.balancing.cagrad import cagrad_dual
from mtl_keras.balancing.nash_mtl import nash_weights

STEP = tf.constant(0, tf.int64)


def rand(t, p, seed):
    return np.random.default_rng(seed).normal(size=(t, p))


def gram(jac):
    return tf.constant(jac @ jac.T, tf.float32)


def orders_for(seed, step, t):
    return partner_orders(t, step_seed(seed, step)).numpy()


# ---------------------------------------------------------------- PCGrad
def pcgrad_reference(jac, orders):
    """Algorithm 1 of Yu et al. on the vectors."""
    out = []
    for i in range(len(jac)):
        g = jac[i].copy()
        for j in orders[i]:
            dot = g @ jac[j]
            if dot < 0:
                g -= dot / (jac[j] @ jac[j]) * jac[j]
        out.append(g)
    return np.sum(out, axis=0)


def test_pcgrad_one_conflicting_pair():
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
    d = balancing.get("pcgrad", seed=0).aggregate(np.stack([g1, g2]).astype(np.float32))
    np.testing.assert_allclose(d, (g1 + 0.5 * g2) + (g2 + g1), atol=1e-6)


@pytest.mark.parametrize("step", [0, 1, 2])
def test_pcgrad_gramian_weights_equal_vector_projections(step):
    jac = rand(5, 20, seed=step)
    jac[1] = -jac[0] + 0.3 * jac[1]
    d = balancing.get("pcgrad", seed=11).aggregate(jac, step=tf.constant(step, tf.int64))
    ref = pcgrad_reference(jac, orders_for(11, step, 5))
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-5)
    mean = balancing.get("pcgrad", seed=11, reduction="mean")
    np.testing.assert_allclose(mean.aggregate(jac, step=tf.constant(step, tf.int64)), ref / 5, 1e-4)


def test_partner_orders_are_permutations_of_the_other_tasks():
    orders = orders_for(1, 7, 6)
    for i, row in enumerate(orders):
        assert sorted(row.tolist()) == [j for j in range(6) if j != i]


# ---------------------------------------------------------------- GradVac
def gradvac_reference(jac, targets, orders, beta):
    """The paper's update rule on the vectors (one group); returns (update, new targets)."""
    targets = targets.copy()
    out = []
    for i in range(len(jac)):
        g = jac[i].copy()
        for j in orders[i]:
            cos = g @ jac[j] / (np.linalg.norm(g) * np.linalg.norm(jac[j]))
            goal = targets[i, j]
            if cos < goal:
                g += (
                    jac[j]
                    * np.linalg.norm(g)
                    * (goal * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - goal**2))
                    / (np.linalg.norm(jac[j]) * np.sqrt(1 - goal**2))
                )
            targets[i, j] = (1 - beta) * goal + beta * cos
        out.append(g)
    return np.sum(out, axis=0), targets


def test_gradvac_two_steps_match_the_vector_rule_and_first_step_is_pcgrad():
    jac0, jac1 = rand(4, 15, seed=20), rand(4, 15, seed=21)
    b = balancing.get("gradvac", seed=5, beta=0.5)
    d0 = b.aggregate(jac0, step=tf.constant(0, tf.int64)).numpy()
    np.testing.assert_allclose(d0, pcgrad_reference(jac0, orders_for(5, 0, 4)), rtol=1e-4)
    ref0, targets = gradvac_reference(jac0, np.zeros((4, 4)), orders_for(5, 0, 4), 0.5)
    np.testing.assert_allclose(b.targets.numpy()[0], targets, atol=1e-6)
    d1 = b.aggregate(jac1, step=tf.constant(1, tf.int64)).numpy()
    ref1, targets = gradvac_reference(jac1, targets, orders_for(5, 1, 4), 0.5)
    np.testing.assert_allclose(d1, ref1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.targets.numpy()[0], targets, atol=1e-6)


def test_gradvac_raises_cosine_to_target():
    # one correction of g1 towards g2 lands exactly on the target cosine
    jac = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = balancing.get("gradvac", seed=0)
    b.setup(["a", "b"])
    b.targets.assign(np.full((1, 2, 2), 0.5, np.float32))
    w = b.weights_from_gramian(gram(jac), tf.ones(2), STEP).numpy()
    # g1' = g1 + w_12 g2 with cos(g1', g2) = 0.5 -> w_12 = tan(30 deg); same for g2'
    np.testing.assert_allclose(w, [1 + np.tan(np.pi / 6)] * 2, rtol=1e-5)
    np.testing.assert_allclose(b.targets.numpy()[0], [[0.5, 0.25], [0.25, 0.5]], atol=1e-6)


def test_gradvac_per_variable_groups():
    jac = rand(3, 10, seed=22)
    b = balancing.get("gradvac", group="variable", seed=2)
    b.setup(["a", "b", "c"])
    b.build_parameter_state([4, 6])
    assert not b.gramian_based and b.sources == ("shared",)
    d = b.aggregate(jac).numpy()
    orders = orders_for(2, 0, 3)
    ref = np.concatenate(
        [
            gradvac_reference(jac[:, s], np.zeros((3, 3)), orders, 0.5)[0]
            for s in (slice(0, 4), slice(4, 10))
        ]
    )
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="laid out for 10 parameters"):
        b.aggregate(rand(3, 9, seed=0))


# ---------------------------------------------------------------- GradDrop
def test_graddrop_keeps_agreeing_signs_and_leak_one_is_the_sum():
    jac = np.array([[1.0, 2.0, -1.0], [3.0, -2.0, -4.0]], np.float32)
    d = balancing.get("graddrop", seed=0).aggregate(jac).numpy()
    assert d[0] == 4.0 and d[2] == -5.0 and d[1] in (2.0, -2.0)
    leaky = balancing.get("graddrop", seed=0, leak=1.0).aggregate(jac).numpy()
    np.testing.assert_allclose(leaky, jac.sum(0))


def test_graddrop_selects_sign_with_probability_of_its_purity():
    # element with purity P = 0.75 keeps the positive gradient in ~75% of the steps
    jac = np.array([[3.0], [-1.0]], np.float32)
    b = balancing.get("graddrop", seed=1)
    draw = tf.function(lambda s: b.aggregate(jac, step=s)[0])
    kept = [float(draw(tf.constant(s, tf.int64))) for s in range(400)]
    assert set(kept) == {3.0, -1.0}
    assert abs(np.mean(np.array(kept) == 3.0) - 0.75) < 0.07


def test_graddrop_representation_rule():
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
    keep = (
        np.array([0.0, 0.5])[:, None, None, None] + np.array([1.0, 0.5])[:, None, None, None] * mask
    )
    np.testing.assert_allclose(out.numpy(), (grads * keep[:, None]).sum(0), rtol=1e-5, atol=1e-6)


def test_graddrop_representation_split_batch_equals_whole_batch():
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


# ---------------------------------------------------------------- CAGrad
def test_cagrad_c_zero_is_the_mean():
    jac = rand(4, 9, seed=30)
    d = balancing.get("cagrad", c=0.0).aggregate(jac).numpy()
    np.testing.assert_allclose(d, jac.mean(0), rtol=1e-5)


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_cagrad_dual_matches_slsqp_and_primal_optimality(seed):
    jac = rand(4, 6, seed=seed)
    g = jac @ jac.T
    t, c = 4, 0.4
    b = np.full(t, 1 / t)
    r = c * np.sqrt(b @ g @ b)

    def objective(w):
        return w @ g @ b + r * np.sqrt(max(w @ g @ w, 0.0))

    best = min(
        minimize(
            objective,
            x0,
            method="SLSQP",
            bounds=[(0, 1)] * t,
            constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
            options={"ftol": 1e-14, "maxiter": 500},
        ).fun
        for x0 in (b, np.eye(t)[0], np.eye(t)[3])
    )
    w, valid = cagrad_dual(tf.constant(g), c)
    assert bool(valid) and objective(w.numpy()) <= best + 1e-8
    # the update maximises min_i g_i.d over the ball ||d - g0|| <= c ||g0||
    d = balancing.get("cagrad", c=c).aggregate(jac).numpy()
    g0 = jac.mean(0)
    assert np.linalg.norm(d - g0) <= c * np.linalg.norm(g0) * (1 + 1e-4)
    dirs = np.random.default_rng(0).normal(size=(2000, 6))
    ball = g0 + c * np.linalg.norm(g0) * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    assert np.min(jac @ d) >= np.max(np.min(ball @ jac.T, axis=1)) - 1e-5


def test_cagrad_scaling_switches():
    jac = rand(3, 5, seed=34)
    base = balancing.get("cagrad").aggregate(jac).numpy()
    np.testing.assert_allclose(balancing.get("cagrad", rescale=1).aggregate(jac), base / 1.16, 1e-5)
    np.testing.assert_allclose(balancing.get("cagrad", rescale=2).aggregate(jac), base / 1.4, 1e-5)
    np.testing.assert_allclose(balancing.get("cagrad", scale="sum").aggregate(jac), base * 3, 1e-5)
    with pytest.raises(ValueError, match="rescale must be 0, 1 or 2"):
        balancing.get("cagrad", rescale=3)


def test_cagrad_iterative_solver_for_many_tasks():
    jac = rand(12, 30, seed=35)
    g = jac @ jac.T
    b = np.full(12, 1 / 12)
    r = 0.4 * np.sqrt(b @ g @ b)
    w, valid = tf.function(cagrad_dual)(tf.constant(g), 0.4)
    exact = minimize(
        lambda w: w @ g @ b + r * np.sqrt(w @ g @ w),
        b,
        method="SLSQP",
        bounds=[(0, 1)] * 12,
        constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
        options={"ftol": 1e-14, "maxiter": 1000},
    ).fun
    value = w.numpy() @ g @ b + r * np.sqrt(w.numpy() @ g @ w.numpy())
    assert bool(valid) and abs(np.sum(w) - 1) < 1e-9 and value <= exact + 1e-3 * abs(exact)


# ---------------------------------------------------------------- IMTL-G
@pytest.mark.parametrize("seed", [40, 41])
def test_imtl_g_equal_projections_on_unit_gradients(seed):
    jac = rand(4, 10, seed=seed)
    d = balancing.get("imtl_g").aggregate(jac).numpy()
    proj = (jac / np.linalg.norm(jac, axis=1, keepdims=True)) @ d
    np.testing.assert_allclose(proj, proj[0], rtol=1e-4)
    # the paper's closed form: a_{2:T} = g_1 U^T (D U^T)^-1, a_1 = 1 - sum
    u = jac / np.linalg.norm(jac, axis=1, keepdims=True)
    dd, uu = jac[0] - jac[1:], u[0] - u[1:]
    a_rest = jac[0] @ uu.T @ np.linalg.inv(dd @ uu.T)
    a = np.concatenate([[1 - a_rest.sum()], a_rest])
    np.testing.assert_allclose(d, a @ jac, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- Nash-MTL
@pytest.mark.parametrize("seed", [50, 51, 52])
def test_nash_solution_satisfies_g_a_equals_one_over_a(seed):
    jac = rand(5, 8, seed=seed) * np.array([[0.01], [1.0], [10.0], [0.5], [3.0]])
    g = jac @ jac.T
    a = nash_weights(tf.constant(g)).numpy()
    assert np.all(a > 0)
    np.testing.assert_allclose(g @ a, 1 / a, rtol=1e-8)
    d = balancing.get("nash_mtl").aggregate(jac).numpy()
    np.testing.assert_allclose(jac @ d, 1 / a, rtol=1e-3)  # d . g_i = 1 / a_i
    np.testing.assert_allclose(d @ d, 5.0, rtol=1e-3)


def test_nash_frobenius_normalisation_and_update_every():
    jac = rand(3, 6, seed=53) * 4.0
    g = jac @ jac.T
    paper = balancing.get("nash_mtl")
    paper.setup(["a", "b", "c"])
    official = balancing.get("nash_mtl", normalization="frobenius")
    official.setup(["a", "b", "c"])
    a = paper.weights_from_gramian(tf.constant(g, tf.float32), None, STEP).numpy()
    b = official.weights_from_gramian(tf.constant(g, tf.float32), None, STEP).numpy()
    np.testing.assert_allclose(b, a * np.sqrt(np.linalg.norm(g)), rtol=1e-4)
    slow = balancing.get("nash_mtl", update_every=2)
    slow.setup(["a", "b", "c"])
    w0 = slow.weights_from_gramian(tf.constant(g, tf.float32), None, tf.constant(0, tf.int64))
    w1 = slow.weights_from_gramian(tf.eye(3), None, tf.constant(1, tf.int64))
    w2 = slow.weights_from_gramian(tf.eye(3), None, tf.constant(2, tf.int64))
    np.testing.assert_allclose(w1, w0)  # reused in between
    np.testing.assert_allclose(w2, np.ones(3), rtol=1e-6)  # G = I -> a = 1


def test_nash_zero_gradient_task_gets_the_mean_weight():
    jac = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    a = nash_weights(tf.constant(jac @ jac.T)).numpy()
    np.testing.assert_allclose(a, [1.0, 0.625, 0.25], rtol=1e-8)


# ---------------------------------------------------------------- Aligned-MTL
def test_aligned_mtl_equalises_the_principal_components():
    jac = rand(3, 7, seed=60)
    g = jac @ jac.T
    cols = []
    for k in range(3):
        b = balancing.get("aligned_mtl", preference=np.eye(3)[k].tolist())
        b.setup(["a", "b", "c"])
        cols.append(b.weights_from_gramian(tf.constant(g, tf.float32), None, STEP).numpy())
    bmat = np.stack(cols, 1)
    lam_min = np.linalg.eigvalsh(g)[0]
    np.testing.assert_allclose(bmat @ g @ bmat, lam_min * np.eye(3), atol=1e-4 * lam_min)
    d = balancing.get("aligned_mtl").aggregate(jac).numpy()
    np.testing.assert_allclose(d, bmat.sum(1) @ jac, rtol=1e-4)


def test_aligned_mtl_scale_modes_and_rank_deficiency():
    jac = np.diag([1.0, 2.0, 4.0])
    for mode, level in (("min", 1.0), ("median", 2.0), ("rmse", np.sqrt(7.0))):
        d = balancing.get("aligned_mtl", scale_mode=mode).aggregate(jac).numpy()
        np.testing.assert_allclose(d, [level] * 3, rtol=1e-5)
    # duplicated task: eigenvalues 2, 16 kept, 0 dropped; aligned rows e1, e1, sqrt(2) e3
    dup = np.stack([jac[0], jac[0], jac[2]])
    d = balancing.get("aligned_mtl").aggregate(dup).numpy()
    np.testing.assert_allclose(d, [2.0, 0.0, np.sqrt(2.0)], rtol=1e-5)


# ---------------------------------------------------------------- UPGrad / DualProj
def test_upgrad_orthogonal_and_conflicting_pairs():
    ortho = np.array([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(balancing.get("upgrad").aggregate(ortho), [1.0, 0.5], atol=1e-6)
    conflict = np.array([[1.0, 0.0], [-1.0, 1.0]])
    # pi(g1) = (0.5, 0.5), pi(g2) = (0, 1): mean (0.25, 0.75)
    np.testing.assert_allclose(balancing.get("upgrad").aggregate(conflict), [0.25, 0.75], 1e-6)


def test_upgrad_projections_match_a_generic_qp():
    jac = rand(4, 5, seed=70)
    g = jac @ jac.T
    cons = {"type": "ineq", "fun": lambda x: jac @ x}
    projections = [
        minimize(lambda x, i=i: np.sum((x - jac[i]) ** 2), jac[i], constraints=cons,
                 method="SLSQP", options={"ftol": 1e-15, "maxiter": 500}).x
        for i in range(4)
    ]  # fmt: skip
    d = balancing.get("upgrad").aggregate(jac).numpy()
    np.testing.assert_allclose(d, np.mean(projections, 0), rtol=1e-3, atol=1e-4)
    mean_proj = minimize(
        lambda x: np.sum((x - jac.mean(0)) ** 2), jac.mean(0), constraints=cons,
        method="SLSQP", options={"ftol": 1e-15, "maxiter": 500},
    ).x  # fmt: skip
    np.testing.assert_allclose(
        balancing.get("dualproj").aggregate(jac), mean_proj, rtol=1e-3, atol=1e-4
    )
    assert g.shape == (4, 4)


def test_dualproj_projects_a_conflicting_mean():
    jac = np.array([[1.0, 0.0], [-2.0, 1.0]])  # mean (-0.5, 0.5) conflicts with g1
    np.testing.assert_allclose(balancing.get("dualproj").aggregate(jac), [0.0, 0.5], atol=1e-6)


def test_upgrad_many_tasks_uses_the_iterative_solver():
    jac = rand(12, 20, seed=71)
    d = balancing.get("upgrad").aggregate(jac).numpy()
    assert np.all(jac @ d >= -1e-3 * np.linalg.norm(d) * np.linalg.norm(jac, axis=1))


# ---------------------------------------------------------------- ConFIG
def test_config_equal_cosines_and_length():
    jac = rand(3, 8, seed=80)
    d = balancing.get("config").aggregate(jac).numpy()
    cos = jac @ d / (np.linalg.norm(jac, axis=1) * np.linalg.norm(d))
    np.testing.assert_allclose(cos, cos[0], rtol=1e-4)
    assert cos[0] > 0
    unit = d / np.linalg.norm(d)
    np.testing.assert_allclose(np.linalg.norm(d), np.sum(jac @ unit), rtol=1e-4)


def test_config_same_direction_as_imtl_g():
    jac = rand(4, 9, seed=81)
    a = balancing.get("config").aggregate(jac).numpy()
    b = balancing.get("imtl_g").aggregate(jac).numpy()
    np.testing.assert_allclose(a / np.linalg.norm(a), b / np.linalg.norm(b), atol=1e-4)


# ---------------------------------------------------------------- DB-MTL
def test_db_mtl_ema_over_two_steps():
    jac0, jac1 = rand(2, 5, seed=90), rand(2, 5, seed=91)
    losses0, losses1 = np.array([2.0, 0.5]), np.array([1.0, 4.0])
    b = balancing.get("db_mtl")
    b.setup(["a", "b"])
    b.build_parameter_state([2, 3])
    b.aggregate(jac0, tf.constant(losses0, tf.float32))
    d = b.aggregate(jac1, tf.constant(losses1, tf.float32)).numpy()
    buf = 0.1 * jac0 / losses0[:, None]
    buf = 0.9 * buf + 0.1 * jac1 / losses1[:, None]
    norms = np.linalg.norm(buf, axis=1)
    np.testing.assert_allclose(d, (norms.max() / norms) @ buf, rtol=1e-5)
    np.testing.assert_allclose(b.grad_buffer.numpy(), buf, rtol=1e-5)
    np.testing.assert_allclose(b.head_weights(tf.constant(losses1, tf.float32), STEP), 1 / losses1)
    with pytest.raises(ValueError, match="holds 5 parameters"):
        b.aggregate(rand(2, 4, seed=0))


# ---------------------------------------------------------------- GradNorm
def test_gradnorm_first_update_and_renormalisation():
    b = balancing.get("gradnorm")
    b.setup(["a", "b"])
    g = tf.constant(np.diag([1.0, 9.0]), tf.float32)  # norms 1 and 3, mean weighted norm 2
    w0 = b.weights_from_gramian(g, tf.constant([2.0, 5.0]), STEP).numpy()
    np.testing.assert_allclose(w0, [1.0, 1.0])
    # dL/dw = sign(w n - 2) n = (-1, 3): Adam's first step moves each weight by lr
    np.testing.assert_allclose(b.task_weights.numpy(), [1.025, 0.975], rtol=1e-6)
    np.testing.assert_allclose(b.initial_losses.numpy(), [2.0, 5.0])
    # a task whose loss falls more slowly gets a larger target and weight
    for s in range(1, 40):
        w = b.weights_from_gramian(tf.eye(2), tf.constant([2.0, 2.5]), tf.constant(s, tf.int64))
    w = w.numpy()
    assert w[0] > w[1] and abs(w.sum() - 2.0) < 1e-5
