"""Each lesson runs top to bottom in a fresh kernel (papermill, profile ci) and its metrics hold."""
import json

import pytest

from lopt_core.notebooks import execute_notebook, list_notebooks
from lopt_core.profiles import get_profile

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


def run(name, out_root):
    (path,) = list_notebooks([name])
    execute_notebook(path, out_root, profile="ci")
    out = out_root / path.stem
    assert (out / path.name).is_file()
    return json.loads((out / "metrics.json").read_text()), out


def test_every_numbered_notebook_has_a_test():
    tested = {"00", "01", "02", "03", "04", "05", "06"}
    assert {p.name[:2] for p in list_notebooks()} <= tested


def test_00_tour_of_the_backbone(out_root):
    m, out = run("00", out_root)
    assert m["num_layers"] == 30 and m["hidden_size"] == 576
    assert m["top_next_token"].strip() == "Paris"
    counts = m["confusion"]["counts"]  # the notebook's confusion table must agree with evaluate's accuracy
    n = m["zero_shot"]["n"]
    assert n == get_profile("ci").eval_limit and sum(map(sum, counts)) == n
    assert sum(counts[i][i] for i in range(len(counts))) / n == pytest.approx(m["zero_shot"]["accuracy"])
    assert (out / "embedding_norms.png").stat().st_size > 10_000


def test_01_prompt_tuning_from_scratch(out_root):
    m, out = run("01", out_root)
    assert m["naive_vs_library_max_abs_diff"] < 1e-4
    assert m["trainable_parameters"] == 20 * 576
    assert m["loss_last"] < m["loss_first"]
    assert m["trained"]["accuracy"] >= m["zero_shot"]["accuracy"] - 0.05
    assert (out / "loss.png").is_file() and (out / "run" / "method" / "method.safetensors").is_file()


def test_02_lopt_low_rank_prompts(out_root):
    m, out = run("02", out_root)
    assert m["parameter_counts"] == m["formula_counts"] == {"prompt_tuning": 11_520, "lopt1": 1_192, "lopt2": 2_304}
    for name in ("prompt_tuning", "lopt1", "lopt2"):  # the table is the mean of the runs, and each beats zero-shot
        runs = [r["accuracy"] for r in m["runs"] if r["method"] == name]
        assert m["methods"][name]["accuracy"] == pytest.approx(sum(runs) / len(runs))
        assert m["methods"][name]["accuracy"] > m["zero_shot_accuracy"]
    for run_ in m["runs"]:
        assert run_["loss_last"] < run_["loss_first"], run_
    assert (out / "accuracy_vs_parameters.png").is_file()


def test_05_prefix_tuning(out_root):
    m, out = run("05", out_root)
    assert m["hand_vs_library_max_abs_diff"] < 1e-4
    scores = m["scores"]
    assert scores["prefix_tuning"]["stored_parameters"] == 10 * 30 * 2 * 3 * 64
    assert scores["prefix_tuning"]["trainable_parameters"] > scores["prefix_tuning"]["stored_parameters"]
    assert scores["prompt_tuning"]["stored_parameters"] == 10 * 576
    for name in ("prompt_tuning", "prefix_tuning"):  # trained methods write better than the frozen model
        for metric in ("bleu", "rouge_l"):
            assert scores[name][metric] > scores["zero_shot"][metric], (name, metric)
    for name in ("prefix_tuning", "prompt_tuning"):
        assert m["loss"][name]["last"] < m["loss"][name]["first"]
    assert [p["prompt_len"] for p in m["prefix_length_curve"]] == [1, 5]
    assert (out / "prefix_length.png").is_file() and (out / "loss_curves.png").is_file()


def test_03_prompt_singular_values(out_root):
    m, out = run("03", out_root)
    assert 1 <= m["effective_rank_90"]["0"] <= 20 and 1 <= m["entropy_rank"]["0"] <= 20
    variants = {row["variant"] for row in m["by_rank"]}
    assert variants == {"truncated full prompt", "LoPT-1 trained", "LoPT-1 warm start"}
    truncated = {row["rank"]: row["accuracy"] for row in m["by_rank"] if row["variant"] == "truncated full prompt"}
    assert set(truncated) == {1, 2, 4, 20}
    assert (out / "spectra.png").is_file() and (out / "accuracy_vs_rank.png").is_file()


def test_04_rank_tradeoffs(out_root):
    m, out = run("04", out_root)
    assert m["runs"] == 4 and m["failed"] == 0
    assert {(g["method"], g["rank"]) for g in m["grid"]} == {("prompt_tuning", 0), ("lopt1", 1), ("lopt1", 4),
                                                              ("lopt2", 1)}
    assert m["front"] and all(0 <= p["accuracy"] <= 1 for p in m["front"])
    assert (out / "sweep" / "results.csv").is_file() and (out / "pareto.png").is_file()


def test_06_iapt(out_root):
    m, out = run("06", out_root)
    assert m["hand_vs_library_max_abs_diff"] < 1e-4
    budget = {row["method"]: row for row in m["comparison"]}
    params = [budget[k]["trainable_parameters"] for k in ("iapt (m=1)", "prompt tuning (n=60)", "prefix, table (n=3)")]
    assert max(params) / min(params) < 1.05  # the same budget, within 5%
    from lopt_core.generation import answer_type
    from lopt_core.tasks import load_task

    rows = load_task("instructions").examples("dev", m["eval_rows"])  # the table must add up from its sub-tasks
    closed = {}
    for r in rows:
        if answer_type(r) == "closed":
            closed[r["task"]] = closed.get(r["task"], 0) + 1
    for row in m["comparison"]:
        weighted = sum(row[t] * k for t, k in closed.items()) / sum(closed.values())
        assert row["exact_match"] == pytest.approx(weighted)
        assert row["rouge_l_free"] == pytest.approx(100 * row["describe"])  # the one free-text sub-task
    for label, loss in m["loss"].items():
        assert loss["last"] < loss["first"], label
    n = len(m["instructions"])
    assert n == 10 and len(m["instruction_similarity"]) == n
    assert (out / "pooling_weights.png").is_file() and (out / "activations.png").is_file()
