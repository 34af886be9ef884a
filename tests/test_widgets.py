"""Widget callbacks driven headlessly by setting values in Python."""
import pytest

from lopt_core.data import load_task
from lopt_core.lab.widgets import MethodExplorer, rank_slider
from lopt_core.methods import build_method


@pytest.fixture(scope="module")
def slider(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=6, init="random")
    task = load_task("sentiment")
    return rank_slider(method, tiny_llama, task, limit=8)


def test_rank_slider_scores_each_rank_once(slider):
    slider.widget()
    assert slider.evaluations == 1 and 6 in slider.cache
    slider.slider.value = 2
    assert slider.evaluations == 2 and "r = 2" in slider.label.value
    slider.slider.value = 6
    assert slider.evaluations == 2  # moving back is served from the cache
    assert slider.draws == 3  # the figure is redrawn at every move


def test_rank_slider_truncation_at_full_rank_scores_like_the_prompt(slider, tiny_llama):
    from lopt_core.evaluation.evaluator import evaluate

    full = evaluate(slider.method, tiny_llama, slider.task, "validation", 8)
    assert slider.score(6)["accuracy"] == full["accuracy"]


def test_method_explorer_counts(tiny_llama):
    explorer = MethodExplorer(tiny_llama)
    explorer.widget()
    explorer.method.value = "lopt2"
    explorer.prompt_len.value = 10
    explorer.rank.value = 3
    info = explorer.describe()
    assert info["trainable"] == 2 * 3 * 64 and "2 * 3 * 64" not in explorer.label.value
    explorer.method.value = "prompt_tuning"
    assert explorer.describe()["trainable"] == 10 * 64 and explorer.rank.disabled
    explorer.method.value = "prefix_tuning"
    info = explorer.describe()
    assert info["stored"] == 10 * 2 * 2 * 2 * 16 and info["kv_bytes"] == info["stored"] * 2
