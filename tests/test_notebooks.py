"""Each lesson runs top to bottom in a fresh kernel (papermill, profile ci) and its metrics hold."""
import json
import math
import re

import pandas as pd
import pytest

from lopt_core.lab.notebooks import execute_notebook, list_notebooks, run_solutions
from lopt_core.lab.profiles import get_profile

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.fixture(scope="module")
def out_root(executed_lessons):
    return executed_lessons  # the book's test builds from these executed copies


def run(name, out_root, **parameters):
    (path,) = list_notebooks([name])
    run_name = f"{path.stem}-{parameters['backbone_spec']}" if parameters else None
    execute_notebook(path, out_root, profile="ci", parameters=parameters, run_name=run_name)
    out = out_root / (run_name or path.stem)
    assert (out / path.name).is_file()
    assert "Loading weights" not in (out / path.name).read_text(), "a model-loading progress bar in the outputs"
    return json.loads((out / "metrics.json").read_text()), out


def test_every_numbered_notebook_has_a_test():
    tested = {"00", "01", "02", "03", "04", "05", "06", "07", "08", "09"}
    assert {p.name[:2] for p in list_notebooks()} <= tested


def test_00_tour_of_the_backbone(out_root):
    m, out = run("00", out_root)
    assert m["num_layers"] == 30 and m["hidden_size"] == 576
    assert m["top_next_token"].strip() == "Paris"
    counts = m["confusion"]["counts"]  # the notebook's confusion table must agree with evaluate's accuracy
    n = m["zero_shot"]["n"]
    assert n == get_profile("ci").test_limit and sum(map(sum, counts)) == n
    assert sum(counts[i][i] for i in range(len(counts))) / n == pytest.approx(m["zero_shot"]["accuracy"])
    assert (out / "embedding_norms.png").stat().st_size > 10_000
    calibrated = m["zero_shot_calibrated"]  # the same rows, the label-word preference of "N/A" divided out
    assert (out / "zero_shot_confidence_calibrated.png").is_file()
    assert calibrated["n"] == n and sum(calibrated["calibration"]["p_content_free"]) == pytest.approx(1.0)


def test_01_prompt_tuning_from_scratch(out_root):
    m, out = run("01", out_root)
    assert m["naive_vs_library_max_abs_diff"] < 1e-4
    assert m["trainable_parameters"] == 20 * 576
    # the same test rows before and after: training must lower their loss (16 steps move accuracy unreliably)
    assert m["trained"]["loss"] < m["initial"]["loss"] and m["trained"]["loss"] < m["zero_shot"]["loss"]
    assert (out / "loss.png").is_file() and (out / "run" / "method" / "method.safetensors").is_file()


def test_02_lopt_low_rank_prompts(out_root):
    m, out = run("02", out_root)
    assert m["parameter_counts"] == m["formula_counts"] == {"prompt_tuning": 11_520, "lopt1": 1_192, "lopt2": 2_304}
    for name in ("prompt_tuning", "lopt1", "lopt2"):  # the table is the mean of the runs
        runs = [r["accuracy"] for r in m["runs"] if r["method"] == name]
        assert m["methods"][name]["accuracy"] == pytest.approx(sum(runs) / len(runs))
    for run_ in m["runs"]:  # every trained prompt fits the test rows better than no prompt at all
        assert run_["test_loss"] < m["zero_shot_loss"], run_
    assert (out / "accuracy_vs_parameters.png").is_file()


def test_05_prefix_tuning(out_root):
    m, out = run("05", out_root)
    assert m["hand_vs_library_max_abs_diff"] < 1e-4
    scores = m["scores"]
    assert scores["prefix_tuning"]["stored_parameters"] == 10 * 30 * 2 * 3 * 64
    assert scores["prefix_tuning"]["trainable_parameters"] > scores["prefix_tuning"]["stored_parameters"]
    assert scores["prompt_tuning"]["stored_parameters"] == 10 * 576
    # Under ci (16 steps, 8 test sources) BLEU moves by less than two machines' float paths apart (prefix-tuning
    # 9.4 against zero-shot's 10.3 here, above it elsewhere): assert what 16 steps reliably show, the loss falling
    # (prefix-tuning's MLP 2.84 → 1.96, prompt tuning 2.12 → 1.98 here). The cpu profile's table compares BLEU.
    assert m["loss"]["prefix_tuning"]["last"] < 0.85 * m["loss"]["prefix_tuning"]["first"]
    assert m["loss"]["prompt_tuning"]["last"] < m["loss"]["prompt_tuning"]["first"]
    assert all(scores[name]["bleu"] >= 0 for name in scores)
    assert [p["prompt_len"] for p in m["prefix_length_curve"]] == [1, 5]
    assert (out / "prefix_length.png").is_file() and (out / "loss_curves.png").is_file()


def test_03_prompt_singular_values(out_root):
    m, out = run("03", out_root)
    for seed, s in m["singular_values"].items():  # the ranks reported are those of the spectra reported
        s = sorted(s, reverse=True)
        energy = [sum(x * x for x in s[:r]) / sum(x * x for x in s) for r in range(1, len(s) + 1)]
        assert m["effective_rank_90"][seed] == next(r for r, e in enumerate(energy, 1) if e >= 0.9 - 1e-9)
        p = [x / sum(s) for x in s]
        assert m["entropy_rank"][seed] == pytest.approx(math.exp(-sum(q * math.log(q) for q in p if q > 0)))
    variants = {row["variant"] for row in m["by_rank"]}
    assert variants == {"truncated full prompt", "LoPT-1 trained", "LoPT-1 warm start"}
    truncated = {row["rank"]: row["accuracy"] for row in m["by_rank"] if row["variant"] == "truncated full prompt"}
    assert set(truncated) == {1, 2, 4, 20}
    # rank n keeps the whole prompt: the same test rows, the same accuracy (up to one row flipped by rounding)
    assert truncated[20] == pytest.approx(m["full_prompt_test_accuracy"]["0"], abs=1.01 / get_profile("ci").test_limit)
    assert (out / "spectra.png").is_file() and (out / "accuracy_vs_rank.png").is_file()
    # section 7: r = n starts exactly at prompt tuning's start; every run's dynamics were read from its history
    assert m["r_equals_n_start_gap"] < 1e-5
    diagnosis = m["diagnosis"]
    assert {"prompt tuning", "LoPT-1 r = 2", "LoPT-1 r = 2, warm start", "LoPT-1 r = n = 20"} <= set(diagnosis)
    for label, row in diagnosis.items():
        assert 0 <= row["test accuracy"] <= 1 and row["drift ‖X − X_start‖ / ‖X_start‖"] > 0, label
    assert diagnosis["LoPT-1 r = 2"]["update ratio of U (median)"] > 0
    assert (out / "update_ratios.png").is_file() and (out / "dynamics_lopt1.png").is_file()


def test_04_rank_tradeoffs(out_root):
    m, out = run("04", out_root)
    assert m["runs"] == 4 and m["failed"] == 0
    assert {(g["method"], g["rank"]) for g in m["grid"]} == {("prompt_tuning", 0), ("lopt1", 1), ("lopt1", 4),
                                                              ("lopt2", 1)}
    grid, front = m["grid"], m["front"]
    key = lambda p: (p["method"], p["prompt_len"], p["rank"])  # noqa: E731
    on_front = {key(p) for p in front}
    assert front and on_front <= {key(q) for q in grid}
    for p in front:  # chosen on validation: nothing with as few parameters validates better
        assert not any(q["trainable_parameters"] <= p["trainable_parameters"]
                       and q["validation_accuracy"] > p["validation_accuracy"] for q in grid), p
    for q in grid:  # and every configuration left off is matched by a front point with no more parameters
        if key(q) not in on_front:
            assert any(p["trainable_parameters"] <= q["trainable_parameters"]
                       and p["validation_accuracy"] >= q["validation_accuracy"] for p in front), q
    runs = pd.read_csv(out / "sweep" / "results.csv")  # the table's accuracy is the runs' test accuracy
    for q in grid:
        mine = runs[(runs["method"] == q["method"]) & (runs["prompt_len"] == q["prompt_len"])
                    & (runs["rank"] == q["rank"])]
        assert q["accuracy"] == pytest.approx(mine["test_accuracy"].mean())
    assert (out / "sweep" / "results.csv").is_file() and (out / "pareto.png").is_file()


def test_06_iapt(out_root):
    m, out = run("06", out_root)
    assert m["hand_vs_library_max_abs_diff"] < 1e-4
    budget = {row["method"]: row for row in m["comparison"]}
    small = [row["trainable_parameters"] for row in m["comparison"] if row["budget"] == "small"]
    assert len(small) == 3 and max(small) / min(small) < 1.05  # the same budget, within 5% (computed from L, d, W)
    assert budget["iapt (m=1)"]["trainable_parameters"] == 30 * (2 * 576 + 4) + 30 * 12
    from lopt_core.data import load_task
    from lopt_core.evaluation.evaluator import answer_type

    rows = load_task("instructions").examples("test", m["eval_rows"])  # the table must add up from its sub-tasks
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
    assert n == 10 and len(m["instruction_similarity"]) == len(m["instruction_similarity_untrained"]) == n
    assert (out / "pooling_weights.png").is_file() and (out / "activations.png").is_file()
    assert m["looked_into"] == "iapt (m=1)"  # sections 3-5 pick IAPT by label: under ci only the small budget ran


GUARD = "tiny-qwen2"  # 2 layers, d = 64: any layer index or size written for SmolLM2 (30 layers, d = 576) breaks


@pytest.mark.parametrize("name", ["00", "01", "02", "03", "04", "05", "06", "07", "08"])
def test_notebook_runs_on_another_layout_and_size(name, out_root):
    """The guard against hard-coded layers and sizes: every notebook on a random 2-layer Qwen2. A random model
    learns nothing, so only what holds for any backbone is checked: the notebook's own by-hand-vs-library asserts
    ran, and its results name this backbone's sizes."""
    m, out = run(name, out_root, backbone_spec=GUARD)
    from lopt_core.model import load_backbone

    guard = load_backbone(GUARD)
    if name == "00":
        assert m["num_layers"] == guard.num_layers == 2 and m["hidden_size"] == guard.hidden_size == 64
    if name == "01":
        assert m["naive_vs_library_max_abs_diff"] < 1e-4
    if name in ("05", "06"):
        assert m["hand_vs_library_max_abs_diff"] < 1e-4  # Qwen2 has the Llama layout 06 writes out by hand
    if name == "02":
        assert m["parameter_counts"] == m["formula_counts"]
    if name == "04":
        assert m["failed"] == 0
    if name == "06":
        small = [row["trainable_parameters"] for row in m["comparison"] if row["budget"] == "small"]
        assert small[0] == guard.num_layers * (2 * guard.hidden_size + 4) + guard.num_layers * 12  # IAPT m = 1
        assert max(small) / min(small) < 1.5  # whole prompt rows at d = 64: as close as the sizes allow
    if name == "08":  # budgets and sizes from this backbone's d: by hand = library, every plan within 20%
        assert m["dept_hand_vs_library_max_abs_diff"] < 1e-5 and m["runs"]
        assert all(abs(math.log(p["trainable"] / p["budget"])) <= math.log(1.2) for p in m["plan"])
    if name == "07":  # the export PEFT loads back computes the kit's distribution on this layout too
        assert m["shipped"]["peft_max_abs_logprob_gap"] < 1e-3 and m["serving"]["max_abs_batched_vs_alone"] < 1e-4


def test_07_compare_and_ship(out_root):
    m, out = run("07", out_root)
    methods = {"prompt_tuning", "lopt1", "lopt2", "prefix_tuning", "iapt"}
    assert m["seeds"] == [0, 1] and len(m["runs"]) == 2 * len(methods)  # two seeds under ci: intervals exist
    rows = {r["method"]: r for r in m["summary"]}
    assert set(rows) == methods
    for name, row in rows.items():  # the table is the mean of the seeds' test scores, with an interval
        tests = [r["test_accuracy"] for r in m["runs"] if r["method"] == name]
        assert row["accuracy"] == pytest.approx(sum(tests) / 2) and row["n"] == 2 and row["low"] <= row["high"]
    assert rows["lopt1"]["trainable_parameters"] < rows["prompt_tuning"]["trainable_parameters"]
    assert rows["prefix_tuning"]["stored_parameters"] < rows["prefix_tuning"]["trainable_parameters"]
    assert rows["prompt_tuning"]["kv_bytes_per_request"] == 20 * 30 * 2 * 3 * 64 * 2  # n·L·2·n_kv·head_dim·bf16
    assert len(m["paired_differences"]) == len(methods) - 1
    for name in m["pareto_front_stored"]:  # chosen on validation: none stores as little and validates better
        assert not any(r["stored_parameters"] <= rows[name]["stored_parameters"]
                       and r["validation_accuracy"] > rows[name]["validation_accuracy"] for r in rows.values()), name
    shipped = m["shipped"]  # chosen on validation among the PEFT-exportable methods, loaded by PEFT itself
    best = max((r for r in rows.values() if r["method"] != "iapt"), key=lambda r: r["validation_accuracy"])
    assert shipped["method"] == best["method"] and shipped["peft_max_abs_logprob_gap"] < 1e-3
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "pareto.png").is_file()
    assert m["serving"]["tasks"] == sorted({m["task"], "sentiment"}) and m["serving"]["max_abs_batched_vs_alone"] < 1e-4


def test_08_prompt_family(out_root):
    m, out = run("08", out_root)
    assert m["dept_hand_vs_library_max_abs_diff"] < 1e-5
    assert m["budgets"] == [1192] and m["seeds"] == [0, 1]  # under ci one budget: LoPT-1's at n = 20, r = 2
    plan = {(p["budget"], p["method"]): p for p in m["plan"]}
    for p in plan.values():  # every method that runs is within 20% of its budget
        assert abs(math.log(p["trainable"] / p["budget"])) <= math.log(1.2), p
    assert {method for _, method in plan} == {"prompt_tuning", "lopt1", "lopt2", "dept"}
    assert set(m["left_out"]["1192"]) == {"residual_prompt_tuning", "p_tuning", "prefix_tuning"}  # too big for 1.2k
    assert len(m["runs"]) == 2 * len(plan)
    cells = {(c["budget"], c["method"]): c for c in m["cells"]}
    for key, c in cells.items():  # each cell is the mean of its seeds' test scores
        tests = [r["test_accuracy"] for r in m["runs"] if (r["budget"], r["method"]) == key]
        assert c["test_accuracy"] == pytest.approx(sum(tests) / 2) and c["low"] <= c["high"]
    for method, budget in m["front"]:  # chosen on validation: nothing trains as few and validates better
        mine = cells[budget, method]
        assert not any(c["trainable_parameters"] <= mine["trainable_parameters"]
                       and c["validation_accuracy"] > mine["validation_accuracy"] for c in cells.values())
    for budget, lines in m["paired_differences"].items():  # each method against prompt tuning at its budget
        assert len(lines) == sum(b == int(budget) for b, _ in plan) - 1
    assert (out / "family_pareto.png").is_file()


def test_09_recap(out_root):
    """The recap reads what lessons 00-08 wrote in this session (they ran above) and quotes their numbers."""
    ran = [p.stem for p in list_notebooks() if (out_root / p.stem / "metrics.json").is_file()]
    if len(ran) < 9:  # e.g. this test alone: nothing to read, and nothing above to check it against
        pytest.skip(f"the recap reads the other lessons' outputs, and only {ran} ran in this session")
    m, out = run("09", out_root)
    assert m["missing"] == [] and len(m["found"]) == 9
    read = {stem: json.loads((out_root / stem / "metrics.json").read_text()) for stem in m["found"]}
    f = m["findings"]
    assert f["00"]["zero_shot_accuracy"] == read["00_tour_of_the_backbone"]["zero_shot"]["accuracy"]
    assert f["01"]["trained"] == read["01_prompt_tuning_from_scratch"]["trained"]["accuracy"]
    lopt = read["02_lopt_low_rank_prompts"]["methods"]
    assert {k: v["accuracy"] for k, v in f["02"].items()} == pytest.approx({k: v["accuracy"] for k, v in lopt.items()})
    assert f["07"]["shipped"] == read["07_compare_and_ship"]["shipped"]["method"]
    assert [tuple(x) for x in f["08"]["front"]] == [tuple(x) for x in read["08_prompt_family"]["front"]]
    assert m["seeds"]["08"] == 2 and (out / "accuracy_vs_parameters.png").stat().st_size > 10_000


SOLUTION_PARAMETERS = {"backbone_spec": "tiny-llama", "steps": 4, "eval_limit": 16, "test_limit": 16, "eval_sources": 2,
                       "eval_rows": 4}  # every code path of every solution, in seconds: the tiny backbone


@pytest.mark.slow
@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem[:2])
def test_every_exercise_has_a_solution_that_runs(path, out_root):
    """Each exercise's solution cell (tagged ``solution``, skipped unless ``solutions = True``) runs under ci with
    the notebook's ``setup`` cells, on short budgets."""
    cells = json.loads(path.read_text())["cells"]
    exercises = next("".join(c["source"]) for c in cells if "## Exercises" in "".join(c["source"]))
    asked = len(re.findall(r"^\d+\. ", exercises.split("## Exercises")[1].split("## ")[0], flags=re.M))
    solutions = [c for c in cells if "solution" in c["metadata"].get("tags", [])]
    assert asked == len(solutions) >= 1, (asked, len(solutions))
    assert all("".join(c["source"]).split("\n")[1].startswith("if solutions:") for c in solutions)
    run_solutions(path, out_root, "ci", SOLUTION_PARAMETERS)
