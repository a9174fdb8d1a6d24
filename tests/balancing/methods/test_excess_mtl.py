import numpy as np
import pytest
import tensorflow as tf

from mtl_keras import balancing
from tests.balancing.properties import (
    STEP,
    GradientMethod,
    Homogeneous,
    PermutationInvariant,
    rand,
)


def official_rule(jacs, step_size, warmup=1):
    """The official code's update (weights start at 1, renormalised to sum to T), with the
    paper's mean over ``warmup`` calls as the baseline; returns each call's weights."""
    t = len(jacs[0])
    weights, squares, warm_sum, baseline, out = np.ones(t), 0.0, np.zeros(t), None, []
    for k, jac in enumerate(jacs):
        squares = squares + jac**2
        risk = np.sum(jac**2 / np.sqrt(squares + 1e-7), axis=1)
        if k < warmup:
            warm_sum += risk
            baseline = warm_sum / warmup
        else:
            weights = weights * np.exp(step_size * risk / baseline)
            weights = weights / weights.sum() * t
        out.append(weights.copy())
    return out


class TestExcessMTL(GradientMethod, PermutationInvariant, Homogeneous):
    name = "excess_mtl"
    variants = ({"warmup_steps": 2, "scale": "tasks"},)

    def equal_gradient_multiple(self, t, norm):
        return 1.0  # first call: warm-up, uniform weights on the simplex

    @pytest.mark.parametrize("warmup", [1, 2])
    def test_matches_the_official_rule_over_four_steps(self, warmup):
        jacs = [rand(3, 6, seed=90 + k) * np.array([[0.5], [1.0], [4.0]]) for k in range(4)]
        b = balancing.get("excess_mtl", step_size=0.5, warmup_steps=warmup, scale="tasks")
        b.setup(["a", "b", "c"])
        b.build_parameter_state([2, 4])
        for jac, expected in zip(jacs, official_rule(jacs, 0.5, warmup), strict=True):
            d = b.aggregate(jac, step=STEP).numpy()
            np.testing.assert_allclose(b.head_weights(None, STEP), expected, rtol=1e-5)
            np.testing.assert_allclose(d, expected @ jac, rtol=1e-4, atol=1e-5)
        paper = balancing.get("excess_mtl", step_size=0.5, warmup_steps=warmup)
        for jac in jacs:
            paper.aggregate(jac, step=STEP)
        np.testing.assert_allclose(paper.head_weights(None, STEP), expected / 3, rtol=1e-5)

    def test_the_task_farthest_from_convergence_gains_weight(self):
        b = balancing.get("excess_mtl", step_size=1.0)
        rng = np.random.default_rng(91)
        for k in range(6):  # task b's gradients keep their size, the others' shrink
            jac = rng.normal(size=(3, 8)) * np.array([[0.5**k], [1.0], [0.5**k]])
            b.aggregate(jac, step=tf.constant(k, tf.int64))
        w = b.head_weights(None, STEP).numpy()
        assert w[1] > w[0] and w[1] > w[2] and np.isclose(w.sum(), 1.0)

    def test_state_is_bound_to_the_parameters_and_arguments_are_checked(self):
        b = balancing.get("excess_mtl")
        b.aggregate(rand(2, 5, seed=0))
        with pytest.raises(ValueError, match="hold 5 parameters"):
            b.aggregate(rand(2, 4, seed=0))
        with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
            balancing.get("excess_mtl", warmup_steps=0)
