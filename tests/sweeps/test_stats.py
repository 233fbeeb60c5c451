"""petloc.sweeps.stats against independent oracles: Student's t quantiles from printed tables and
scipy.stats.t.interval, the normal-theory interval of a mean, and planted differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from petloc.sweeps.stats import BETTER, NOT_DISTINGUISHABLE, WORSE, paired_bootstrap, t_interval

# Two-sided 95% quantiles t_{0.975, df} as printed in statistics tables.
T_TABLE = {2: 4.3027, 4: 2.7764}


@pytest.mark.parametrize("values", [[0.70, 0.71, 0.73], [0.61, 0.64, 0.60, 0.66, 0.62]])
def test_t_interval_is_the_textbook_formula(values: list[float]) -> None:
    spread = t_interval(values)

    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_TABLE[n - 1] * std / math.sqrt(n)
    assert (spread.n, spread.mean, spread.std) == (n, pytest.approx(mean), pytest.approx(std))
    assert (spread.low, spread.high) == (
        pytest.approx(mean - half, abs=1e-4),
        pytest.approx(mean + half, abs=1e-4),
    )
    low, high = stats.t.interval(0.95, df=n - 1, loc=mean, scale=stats.sem(values))
    assert (spread.low, spread.high) == (pytest.approx(low), pytest.approx(high))


def test_one_value_has_no_spread() -> None:
    spread = t_interval([0.7])

    assert (spread.n, spread.mean, spread.std, spread.low, spread.high) == (1, 0.7, None, None, None)


def test_bootstrap_with_a_fixed_seed_reproduces_its_interval() -> None:
    differences = np.random.default_rng(1).normal(0.02, 0.2, size=300)

    first, second = paired_bootstrap(differences), paired_bootstrap(differences)
    other_seed = paired_bootstrap(differences, seed=1)

    assert (first.low, first.high) == (second.low, second.high)
    assert (other_seed.low, other_seed.high) != (first.low, first.high)


def test_bootstrap_interval_is_close_to_the_normal_theory_interval() -> None:
    """For a mean of 400 values the sampling distribution is near normal: mean ± 1.96 s / sqrt(n)."""
    differences = np.random.default_rng(2).uniform(-0.3, 0.5, size=400)

    result = paired_bootstrap(differences)

    half = 1.959964 * differences.std(ddof=1) / math.sqrt(differences.size)
    assert result.mean == pytest.approx(differences.mean())
    assert result.low == pytest.approx(differences.mean() - half, abs=0.1 * half)
    assert result.high == pytest.approx(differences.mean() + half, abs=0.1 * half)


def test_identical_runs_are_not_distinguishable() -> None:
    result = paired_bootstrap(np.zeros(50))

    assert (result.mean, result.low, result.high) == (0.0, 0.0, 0.0)
    assert (result.share_better, result.share_worse) == (0.0, 0.0)
    assert result.verdict == NOT_DISTINGUISHABLE


def test_a_planted_shift_is_found_either_way() -> None:
    rng = np.random.default_rng(3)
    reference = rng.uniform(0.2, 0.8, size=100)
    candidate = reference + 0.1 + rng.normal(0, 0.05, size=100)

    better = paired_bootstrap(candidate - reference)
    worse = paired_bootstrap(reference - candidate)

    assert better.verdict == BETTER and better.low > 0
    assert better.share_better == pytest.approx(np.mean(candidate > reference))
    assert worse.verdict == WORSE and worse.high < 0
    assert worse.share_worse == better.share_better


def test_a_noisy_difference_of_zero_mean_is_not_distinguishable() -> None:
    differences = np.random.default_rng(4).normal(0, 0.2, size=200)
    differences -= differences.mean()

    result = paired_bootstrap(differences)

    assert result.low < 0 < result.high
    assert result.verdict == NOT_DISTINGUISHABLE


def test_one_image_is_not_enough() -> None:
    with pytest.raises(ValueError, match="at least two"):
        paired_bootstrap([0.1])
