"""Figures draw the numbers they are given: read back from the artists, not looked at."""
import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
from lopt_core.evaluation import plots  # noqa: E402


def test_loss_curves_draw_validation_points_where_evaluated_and_the_chance_line():
    history = pd.DataFrame({"step": [1, 2, 3, 4], "loss": [0.9, 0.8, 0.7, 0.6],
                            "eval_loss": [math.nan, 0.75, math.nan, 0.65]})
    ax = plots.loss_curves({"run": history}, smooth=1, chance=math.log(2)).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["run: train"].get_ydata()) == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert list(lines["run: validation"].get_xdata()) == [2, 4]
    assert list(lines["run: validation"].get_ydata()) == pytest.approx([0.75, 0.65])
    assert list(lines["chance (0.693)"].get_ydata()) == pytest.approx([math.log(2)] * 2)
    assert "run: validation" not in {line.get_label() for line in
                                     plots.loss_curves({"run": history}, validation=False).axes[0].get_lines()}


def test_budget_front_rings_the_front_it_is_given_at_test_accuracy():
    cells = pd.DataFrame({"method": ["a", "b", "a", "b"], "trainable_parameters": [100, 120, 1000, 900],
                          "validation_accuracy": [0.6, 0.9, 0.7, 0.95], "test_accuracy": [0.9, 0.5, 0.8, 0.6],
                          "low": [0.8, 0.4, 0.7, 0.5], "high": [1.0, 0.6, 0.9, 0.7]})
    from lopt_core.lab.analysis import pareto_front

    ax = plots.budget_front(cells, pareto_front(cells, score="validation_accuracy")).axes[0]
    front = next(line for line in ax.get_lines() if line.get_label().startswith("Pareto front"))
    assert list(front.get_xdata()) == [100, 120, 900]  # by test it would be [100] alone
    assert list(front.get_ydata()) == pytest.approx([0.9, 0.5, 0.6])


def test_kv_cache_draws_one_cell_per_layer_and_position_coloured_by_kind_with_the_counts_in_the_title():
    import numpy as np
    import torch

    L, heads, positions, head_dim, prefix = 3, 2, 7, 4, 2
    keys = torch.ones(L, heads, positions, head_dim)
    keys[1, :, 5] = 3.0  # one text slot (layer 1, position 5) three times the others: the deepest grey
    layers = [(keys[layer], np.ones((heads, positions, head_dim))) for layer in range(L)]  # tensors and arrays alike
    fig = plots.kv_cache(layers, prefix=prefix)
    image = np.asarray(fig.axes[0].images[0].get_array())
    assert image.shape == (L, positions, 4)
    assert (image[:, :prefix, 0] > image[:, :prefix, 2] + 0.2).all()  # prefix: orange
    assert np.allclose(image[:, prefix:, 0], image[:, prefix:, 2])  # text: grey
    assert image[1, 5, :3].sum() < image[0, 5, :3].sum()  # a larger norm is drawn deeper
    values = np.asarray(fig.axes[1].images[0].get_array())  # depth is per panel: equal norms, all at the deepest
    assert np.allclose(values[:, prefix:, :3], image[1, 5, :3])
    assert f"W = L·2·n_kv·head_dim = {L * 2 * heads * head_dim}" in fig.get_suptitle()
    assert f"n = {prefix} prefix positions" in fig.get_suptitle()
    wide = plots.kv_cache([(keys[layer], np.ones((heads, positions, 6))) for layer in range(L)], prefix=prefix)
    assert f"W = L·n_kv·(K + V) = {L * heads * (head_dim + 6)}" in wide.get_suptitle()  # V's head size its own
    assert "× 6 numbers per cell" in wide.axes[1].get_title()


def test_a_label_that_starts_with_a_registry_key_shows_the_methods_title():
    from lopt_core.methods import list_methods, method_class, readable

    assert readable("lopt1 (r=2)") == "LoPT-1 (r=2)"
    assert readable("prompt_tuning") == "prompt tuning"
    assert readable("iapt (m=32)") == "IAPT (m=32)"
    assert readable("prefix_tuning: train") == "prefix-tuning: train"
    # only a whole key: a benchmark label that extends one, or any other text, comes back unchanged
    assert readable("lopt1_residual") == "lopt1_residual" and readable("prefix_table") == "prefix_table"
    assert readable("run") == "run" and readable(3) == "3"
    kit = [key for key in list_methods() if method_class(key).__module__.startswith("lopt_core.")]  # not a test's
    assert len(kit) >= 9 and all(method_class(key).title for key in kit)  # every method of the kit has a title
    ax = plots.accuracy_vs_parameters(pd.DataFrame({"method": ["lopt2", "residual_prompt_tuning"],
                                                    "trainable_parameters": [1192, 11520], "accuracy": [0.6, 0.7]}),
                                      baseline=0.5).axes[0]
    assert [t.get_text() for t in ax.texts] == ["LoPT-2", "residual prompt tuning"]
    history = pd.DataFrame({"step": [1, 2], "loss": [0.9, 0.8]})
    assert "LoPT-1: train" in {line.get_label() for line in plots.loss_curves({"lopt1": history}).axes[0].get_lines()}


def test_accuracy_vs_rank_ticks_each_rank_trained_as_an_integer():
    table = pd.DataFrame({"rank": [1.0, 2.0, 4.0, 20.0, 1.0, 2.0, math.nan],
                          "accuracy": [0.5, 0.52, 0.49, 0.75, 0.51, 0.56, 0.7],
                          "variant": ["truncated"] * 4 + ["lopt1"] * 2 + ["lopt1"]})
    ax = plots.accuracy_vs_rank(table).axes[0]
    assert list(ax.get_xticks()) == [1, 2, 4, 20]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "20"]
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0.5, 0.52, 0.49, 0.75])
