import numpy as np
import pytest
from scipy.stats import trim_mean

from mtl_keras import balancing
from tests.balancing.properties import GradientMethod, Homogeneous, PermutationInvariant, rand


class TestTrimmedMean(GradientMethod, PermutationInvariant, Homogeneous):
    name = "trimmed_mean"
    variants = ({"trim": 1},)

    def equal_gradient_multiple(self, t, norm):
        return 1.0

    @pytest.mark.parametrize(("t", "beta"), [(3, 1 / 3), (7, 0.2), (7, 0.45), (4, 0.1)])
    def test_matches_scipy_trim_mean(self, t, beta):
        jac = rand(t, 9, seed=80 + t)
        d = balancing.get("trimmed_mean", beta=beta).aggregate(jac).numpy()
        np.testing.assert_allclose(d, trim_mean(jac, beta, axis=0), rtol=1e-5, atol=1e-6)

    def test_three_tasks_give_the_median_and_trim_counts_rows(self):
        jac = rand(3, 6, seed=81)
        np.testing.assert_allclose(self.run(jac), np.median(jac, 0), rtol=1e-6)
        five = rand(5, 6, seed=82)
        d = balancing.get("trimmed_mean", trim=2).aggregate(five).numpy()
        np.testing.assert_allclose(d, np.median(five, 0), rtol=1e-6)
        with pytest.raises(ValueError, match="removes 4 of 4 values per parameter"):
            balancing.get("trimmed_mean", trim=2).aggregate(rand(4, 6, seed=0))
        with pytest.raises(ValueError, match="beta must be in"):
            balancing.get("trimmed_mean", beta=0.5)

    def test_an_outlier_task_does_not_move_the_update(self):
        jac = rand(5, 6, seed=83)
        base = balancing.get("trimmed_mean", trim=1).aggregate(jac).numpy()
        jac[2] = 1e4 * np.sign(jac[2])  # arbitrary values in one row
        moved = balancing.get("trimmed_mean", trim=1).aggregate(jac).numpy()
        assert np.max(np.abs(moved - base)) < np.max(np.abs(rand(5, 6, seed=83)))
        assert np.all(np.abs(moved) < 10)


@pytest.mark.parametrize("t", range(1, 11))  # the comparator network up to 8 rows, tf.sort above
def test_sorted_rows_equals_tf_sort(t):
    import tensorflow as tf

    from mtl_keras.balancing.trimmed_mean import sorted_rows

    x = rand(t, 300, seed=90 + t)
    x[:, :50] = np.round(x[:, :50])  # ties
    np.testing.assert_array_equal(
        sorted_rows(tf.constant(x)).numpy(), tf.sort(tf.constant(x), axis=0).numpy()
    )
