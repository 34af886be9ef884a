"""Means with Student-t intervals and paired differences, against known values."""
import math

import pytest

from lopt_core.evaluation.stats import mean_ci, paired_difference, summarise, t_cdf, t_quantile, verdict


@pytest.mark.parametrize("p, df, want", [(0.975, 2, 4.303), (0.975, 1, 12.706), (0.975, 4, 2.776), (0.975, 10, 2.228),
                                          (0.95, 5, 2.015), (0.995, 3, 5.841), (0.975, 1000, 1.962), (0.5, 3, 0.0)])
def test_t_quantiles_match_the_tables(p, df, want):
    assert t_quantile(p, df) == pytest.approx(want, abs=1e-3)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    assert t_quantile(1 - p, df) == pytest.approx(-want, abs=1e-3)


def test_mean_ci_of_three_seeds():
    ci = mean_ci([0.86, 0.87, 0.88])
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert ci.mean == pytest.approx(0.87) and ci.n == 3
    assert (ci.low, ci.high) == pytest.approx((0.87 - half, 0.87 + half), abs=1e-6)
    mean, low, high = ci
    assert ci.format(scale=100, unit="%") == "87.0% ± 2.5"
    assert mean_ci([0.8, 0.8]).half_width == 0


def test_one_value_gives_no_interval_and_says_so():
    ci = mean_ci([0.5])
    assert ci.mean == 0.5 and math.isnan(ci.low) and math.isnan(ci.high)
    assert ci.format(scale=100, unit="%") == "50.0% (1 seed: no interval)"
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci([])


def test_paired_differences_pair_by_seed():
    a, b = {0: 0.84, 1: 0.83, 2: 0.86, 3: 0.9}, {0: 0.86, 1: 0.87, 2: 0.85}
    d = paired_difference(a, b)  # seed 3 has no partner
    assert d.n == 3 and d.mean == pytest.approx((-0.02 - 0.04 + 0.01) / 3)
    assert d.format(scale=100, unit=" points", style="range").startswith("-1.7 points [")
    assert paired_difference([1, 2, 3], [0, 1, 2]).half_width == 0
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_difference([1, 2], [1])


def test_summarise_groups_seeds():
    rows = [{"method": m, "seed": s, "accuracy": v} for m, vals in (("pt", [0.8, 0.9, 0.85]), ("lopt", [0.7]))
            for s, v in enumerate(vals)]
    table = summarise(rows, "method", "accuracy").set_index("method")
    assert table.loc["pt", "n"] == 3 and table.loc["pt", "mean"] == pytest.approx(0.85)
    assert table.loc["pt", "pm"] == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-5)
    assert math.isnan(table.loc["lopt", "pm"])


def test_paired_table_compares_every_method_with_the_baseline():
    from lopt_core.evaluation.stats import paired_table
    from lopt_core.methods import readable

    rows = [{"method": m, "seed": s, "accuracy": v} for m, vals in
            (("prompt_tuning", [0.86, 0.87, 0.88]), ("lopt2", [0.85, 0.85, 0.86])) for s, v in enumerate(vals)]
    table = paired_table(rows, "accuracy", baseline="prompt_tuning")
    assert len(table) == 1 and table.loc[0, "n"] == 3
    assert table.loc[0, "difference"].startswith("lopt2 − prompt_tuning: -1.7 points [")
    assert table.loc[0, "verdict"] == "behind"  # [-3.1, -0.2]: below zero on every seed's evidence
    titled = paired_table(rows, "accuracy", baseline="prompt_tuning", label=readable)  # names as figures show them
    assert titled.loc[0, "difference"].startswith("LoPT-2 − prompt tuning: -1.7 points [")
    assert titled.loc[0, "method"] == "lopt2"  # the column keeps the key
    with pytest.raises(ValueError, match="no rows of the baseline"):
        paired_table(rows, "accuracy", baseline="zero_shot")


def test_a_difference_is_ahead_behind_or_indistinguishable_by_its_interval():
    assert paired_difference([0.9, 0.92, 0.91], [0.85, 0.86, 0.86]).verdict == "ahead"
    assert paired_difference([0.85, 0.86, 0.86], [0.9, 0.92, 0.91]).verdict == "behind"
    assert paired_difference([0.9, 0.8, 0.85], [0.85, 0.86, 0.86]).verdict == "indistinguishable"
    assert paired_difference([0.9], [0.8]).verdict == "undecided"  # one seed: no interval, no verdict
    assert verdict(0.0, 0.02) == "indistinguishable"  # an interval that touches zero holds it
