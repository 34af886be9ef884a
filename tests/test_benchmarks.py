"""The benchmarks against the library: every method's ``recommended_lr`` is the rate the committed learning-rate
grid (``benchmarks/results/lr_grid.json``) recommends for it, and the numbers its comment quotes are that record's;
the scripts share ``benchmarks/harness`` and never import one another."""
import ast
import importlib
import inspect
import json
import re
import sys

import pytest
from conftest import ROOT, backbone

from lopt_core.methods import build_method, list_methods

BENCHMARKS = ROOT / "benchmarks"
GRID = json.loads((BENCHMARKS / "results" / "lr_grid.json").read_text())

# (registered method, options that decide its rate) → the grid label whose recommended rate its recommended_lr is
TIED = {
    ("prompt_tuning", ()): "prompt_tuning",
    ("lopt1", ()): "lopt1_residual_wd",  # the default: X0 + U V with weight decay 1
    ("lopt1", (("residual", False),)): "lopt1",  # the paper's X = U V
    ("lopt2", ()): "lopt2_residual",  # the default: X0 + σ(X0 U) V
    ("lopt2", (("residual", False),)): "lopt2",  # the paper's σ(X0 U) V
    ("prefix_tuning", (("reparam", True),)): "prefix_tuning",  # through the MLP
    ("prefix_tuning", (("reparam", False),)): "prefix_table",
    ("iapt", ()): "iapt",  # the default width, m = 32
    ("iapt", (("bottleneck", 1),)): "iapt_m1",  # a narrow bottleneck: its own rate (narrow_lr)
    ("residual_prompt_tuning", ()): "residual_pt",
    ("dept", ()): "dept",  # the prompt's rate; A and B train at lr_ratio × it
    ("p_tuning", ()): "p_tuning",  # the MLP encoder, h = d
}
# methods whose grid label exists but has not run yet → (the label, the rate they use until it has, and where it
# comes from, as their comment says): a method leaves this table for TIED once its grid's rule has decided (none
# waits now: P-tuning, the last, moved on 2026-12-06)
WAITING: dict[str, tuple[str, float, str]] = {}
# quoted in a learning-rate comment, yet not a validation accuracy of the grid
ELSEWHERE = {"iapt": ["0% exact match"]}  # IAPT at m = 1 on the instruction mixture (iapt_report.py)


def harness(module: str):
    """``benchmarks/harness/<module>.py``, imported as the scripts import it (benchmarks/ on the path)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(f"harness.{module}")


def grid_labels(method: str) -> list[str]:
    """The labels of the grid that trained ``method`` (prefix-tuning: MLP and table; IAPT: m = 32 and m = 1)."""
    return [label for label, row in GRID["results"].items() if row["method"] == method]


def lr_comment(method: str) -> str:
    """The comment in ``method``'s class (or its config's) that cites benchmarks/lr_grid.py, with the comment lines
    that continue it."""
    cls = type(build_method(method, backbone("tiny-llama")))
    lines = (inspect.getsource(cls) + inspect.getsource(cls.Config)).splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if "lr_grid.py" in line and line.lstrip().startswith("#"):
            block = [line]
            for more in lines[i + 1:]:
                if not more.lstrip().startswith("#"):
                    break
                block.append(more)
            blocks.append(" ".join(x.strip().lstrip("#").strip() for x in block))
    assert blocks, f"{cls.__name__}'s module has no comment citing benchmarks/lr_grid.py for its recommended_lr"
    return " ".join(blocks)


def recorded(method: str) -> tuple[list[float], set[float]]:
    """The validation accuracies (per task and over tasks, seeds averaged) and the rates as run, of every label of
    the grid that trained ``method``."""
    accuracies, rates = [], set()
    for label in grid_labels(method):
        row = GRID["results"][label]
        accuracies += [v for per_task in row["mean_over_seeds"].values() for v in per_task.values()]
        accuracies += list(row["mean_over_tasks"].values())
        rates |= {lr for task in row["mean_over_seeds"] for lr in GRID["config"]["grids_as_run"][f"{label} {task}"]}
    return accuracies, rates


def trainable(method: str) -> bool:
    return build_method(method, backbone("tiny-llama")).trainable_parameters() > 0


def test_every_trainable_method_is_tied_to_the_grid():
    """Tied to its grid's choice, or waiting for its grid's first runs (and saying so)."""
    assert {m for m in list_methods() if trainable(m)} == {m for m, _ in TIED} | set(WAITING)
    assert not {m for m, _ in TIED} & set(WAITING)


@pytest.mark.parametrize("method", sorted(WAITING))
def test_a_method_waiting_for_its_grid_says_so_until_it_has_run(method):
    """Its label is in the grid, and the grid's rule has not decided it yet (no runs on both tasks, or runs the rule
    still waits for: a grid recorded part-way, across sessions); its rate is the one its comment names. Once the rule
    has decided, this fails until the method moves to TIED (its rate then the grid's choice)."""
    label, rate, source = WAITING[method]
    assert label in harness("grid").GRIDS and harness("grid").GRIDS[label][0] == method
    decided = label in GRID["results"] and not GRID["results"][label]["waiting_for"]
    assert not decided, f"{label}'s grid has run: tie {method} to it (TIED) and take its rate"
    assert build_method(method, backbone("tiny-llama")).recommended_lr == rate
    comment = " ".join(line.strip().lstrip("#").strip()
                       for line in inspect.getsource(type(build_method(method, backbone("tiny-llama")))).splitlines()
                       if line.strip().startswith("#"))
    assert source in comment and "until this method's own grid has run" in comment, comment


@pytest.mark.parametrize(("method", "options"), list(TIED), ids=[TIED[k] for k in TIED])
def test_recommended_lr_is_the_rate_the_grid_recommends(method, options):
    instance = build_method(method, backbone("tiny-llama"), **dict(options))
    label = TIED[method, options]
    grid_options = harness("grid").built_options(GRID["results"][label]["options"])
    assert {k: getattr(instance.config, k) for k in grid_options} == grid_options  # the grid trained this instance
    assert instance.recommended_lr == GRID["results"][label]["recommended_lr"]
    # and the weight decay the grid trained it with is the one it recommends (0: the trainer's, when none is named)
    assert instance.recommended_weight_decay == harness("grid").TRAIN_OPTIONS.get(label, {}).get("weight_decay", 0.0)


@pytest.mark.parametrize("method", sorted({m for m, _ in TIED}))
def test_the_lr_comment_quotes_the_record(method):
    """Every accuracy (``85.3%``, ``53-67%``) and rate (``9.49e-5``) in the comment is in the grid's record."""
    comment = lr_comment(method)
    for phrase in ELSEWHERE.get(method, []):
        comment = comment.replace(phrase, "")
    accuracies, rates = recorded(method)
    quoted = re.findall(r"(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?%", comment)
    assert quoted, comment
    for text in (t for pair in quoted for t in pair if t):
        digits = len(text.partition(".")[2])
        assert any(f"{100 * v:.{digits}f}" == text for v in accuracies), f"{method}: {text}% is not in the record"
    quoted_rates = re.findall(r"\b\d+(?:\.\d+)?e-\d+\b", comment)
    assert quoted_rates, comment
    for text in quoted_rates:
        assert float(f"{float(text):.3g}") in rates, f"{method}: {text} is not a rate of its grid"


def test_the_grid_summary_agrees_with_its_record_of_runs():
    """results/lr_grid.json's recommended rates are what the committed runs (lr_grid_runs.json) recommend."""
    grid = harness("grid")
    for label, row in GRID["results"].items():
        assert grid.recommended_rate(label) == row["recommended_lr"], label


def test_no_script_imports_another_script():
    """Every benchmarks/*.py is a script; what scripts share lives in benchmarks/harness."""
    scripts = sorted(BENCHMARKS.glob("*.py"))
    names = {path.stem for path in scripts}
    for path in scripts:
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert not imported & names, f"{path.name} imports the script(s) {sorted(imported & names)}"
        assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} is not a script"


def test_a_stable_rate_has_a_margin_above_it():
    """The grids choose the best mean over seeds among rates that hold: not diverged, two seeds, and a next rate up
    that neither diverged nor fell more than 10 points (the demo's LoPT-2 rate, one step below a divergence, turned
    another machine's float path into a score below zero-shot)."""
    choose = harness("grid").stable_choice
    lopt2 = {3e-3: [0.5, 0.52], 1e-2: [0.63, 0.6], 3e-2: [0.68, 0.7], 1e-1: [0.79, 0.77], 0.316: [None, 0.5]}
    result = choose(lopt2)
    assert result["lr"] == 3e-2  # 1e-1 is better but the rate above it diverged
    assert "diverged" in result["refused"][1e-1] and result["refused"][0.316] == "diverged"
    cliff = {1e-2: [0.6, 0.6], 3e-2: [0.7, 0.66], 1e-1: [0.55, 0.54]}  # 3e-2 → 1e-1 falls 13.5 points
    assert choose(cliff)["lr"] == 1e-2 and "fell 13.5 points" in choose(cliff)["refused"][3e-2]
    assert choose({1e-2: [0.6], 3e-2: [0.5]})["lr"] is None  # one seed: no rate holds
    assert choose({1e-2: [0.6, 0.6]})["lr"] is None  # nothing run above: the margin is unknown
    assert choose({1e-2: [0.6, 0.6], 3e-2: [0.55, 0.56]})["lr"] == 1e-2  # a fall of 4.5 points is within the margin


def test_each_candidate_demo_budget_has_its_own_rate_record():
    """A candidate budget (other steps, another batch, LoPT's residual form) is tuned into its own record, so the
    demo's committed rates are never mixed with a candidate's runs."""
    from lopt_core.lab.profiles import get_profile

    name = harness("grid").demo_rates_record
    forms = {"lopt1": {"residual": True}, "lopt2": {"residual": True}}
    batch_8 = {"batch_size": 8}  # the profiles' default batch: no batch in the name
    assert name(get_profile("demo", method_options={}, **batch_8).to_dict()) == "demo_rates_60_steps"
    assert name(get_profile("demo", method_options=forms, **batch_8).to_dict()) == "demo_rates_60_steps_residual"
    assert name(get_profile("demo", steps=30, method_options={}, **batch_8).to_dict()) == "demo_rates_30_steps"
    batch_4 = get_profile("demo", batch_size=4, method_options=forms).to_dict()
    assert name(batch_4) == "demo_rates_60_steps_batch_4_residual"
    plain = {"lopt1": {"residual": False}}
    assert name(get_profile("demo", method_options=plain, **batch_8).to_dict()) == "demo_rates_60_steps"


def test_the_demo_check_record_holds():
    """benchmarks/demo_check.py's committed record is of today's demo profile (its settings, the forms it trains, its
    rates and the weight decay each method trains with), has every method on 3 seeds × 2 thread counts, and every run
    beat zero-shot on validation by 5 points: the demo holds on two float paths, not only on the machine that chose
    its rates."""
    from lopt_core.lab.profiles import get_profile

    record, demo = json.loads((BENCHMARKS / "results" / "demo_check.json").read_text()), get_profile("demo")
    settings = harness("grid").profile_settings  # everything but the rates, tuples as lists
    assert settings(record["config"]["profile"]) == settings(demo.to_dict())
    assert all(r["lr"] == demo.learning_rates[r["method"]] for r in record["runs"])  # each at today's rate
    ranks = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}}  # as notebook 02 builds them
    decays = {m: harness("grid").trained_decay(m, demo, backbone("tiny-llama"), ranks[m]) for m in ranks}
    assert decays["lopt1"] == demo.weight_decays.get("lopt1", 1.0)  # the profile's, else the residual LoPT-1's own
    assert all(r.get("weight_decay", 0.0) == decays[r["method"]] for r in record["runs"])  # and today's decay
    assert record["config"]["methods"] == {name: demo.options(name, **ranks[name]) for name in ranks}
    runs = {(r["method"], r["seed"], r["threads"]) for r in record["runs"]}
    assert runs == {(m, s, t) for m in ("prompt_tuning", "lopt1", "lopt2") for s in (0, 1, 2) for t in (1, 2)}
    for r in record["runs"]:
        assert r["validation"] >= record["zero_shot"][str(r["threads"])]["validation"] + 0.05, r


def test_the_grid_applies_the_stability_rule_once_every_rate_has_two_seeds():
    import pandas as pd

    grid = harness("grid")

    def table(runs):  # (task, rate, seed, accuracy) of lopt2's label
        return pd.DataFrame([{**grid.point("lopt2", lr, {"task_name": task}, seed), "status": "ok",
                              "validation_accuracy": acc} for task, lr, seed, acc in runs])

    rows = [(task, lr, seed, acc) for task in ("yesno", "sst2") for seed in (0, 1)
            for lr, acc in ((3e-3, 0.60), (1e-2, 0.80), (3e-2, 0.62))]  # 1e-2 is best, but 3e-2 falls 18 points
    choice = grid.grid_choice(table(rows), "lopt2", ["yesno", "sst2"])
    assert choice["lr"] == 3e-3 and choice["by"] == "stability margin" and choice["missing"] == {}
    assert "fell 18.0 points" in choice["refused"][1e-2]
    partial = grid.grid_choice(table([r for r in rows if not (r[1] == 3e-2 and r[2] == 1)]), "lopt2",
                               ["yesno", "sst2"])  # seed 1 missing at 3e-2: the earlier rule, and what it waits for
    assert partial["lr"] == 1e-2 and partial["missing"] == {3e-2: [1]} and "waits for seed 1 at 1 rate" in partial["by"]


def test_a_diverged_run_is_a_result_the_grid_records_and_the_rule_reads(tmp_path):
    """A run whose loss became NaN is recorded (status, no traceback, metrics ``diverged``), restored, never counted
    as a failure of the grid, and refuses the rate below it; its task's other rates are unaffected."""
    import pandas as pd

    from lopt_core.utils import read_json, write_json

    quality, grid = harness("quality"), harness("grid")
    out, record = tmp_path / "runs", tmp_path / "x_runs.json"
    error = "PapermillExecutionError: TrainingDiverged: the loss became nan at step 39"
    (out / "a").mkdir(parents=True)
    write_json(out / "a" / "status.json", {"params": {"lr": 0.1}, "status": "failed", "error": error,
                                           "traceback": "long"})
    (out / "b").mkdir()
    write_json(out / "b" / "status.json", {"params": {"lr": 0.3}, "status": "failed", "error": "OSError: disk"})
    sweep = quality.Sweep(out, record, "test")
    assert sweep.save_record() == 1  # the divergence, not the other failure
    run = read_json(record)["runs"][0]
    assert run["metrics"] == {"diverged": True} and "traceback" not in run["status"]
    again = quality.Sweep(tmp_path / "elsewhere", record, "test")
    assert again.restore() == 1 and quality.diverged(read_json(tmp_path / "elsewhere" / "a" / "status.json"))
    assert again._diverged({"lr": 0.1}) is False  # its folder is named by the point's key, not "a"
    from lopt_core.lab.sweep import run_key

    point = {"method": "lopt2", "lr": 0.1, "seed": 0, "options": {"residual": False}}  # its default named
    (out / run_key(point)).mkdir()
    write_json(out / run_key(point) / "status.json", {"params": point, "status": "failed", "error": error})
    table = sweep.run([point], strict=True, diverged_ok=True)  # nothing to train; not a failure of the sweep
    assert list(table["status"]) == ["failed"] and quality.diverged(table.iloc[0])

    def row(task, lr, seed, acc):
        return {**grid.point("lopt2", lr, {"task_name": task}, seed), "status": "ok" if acc else "failed",
                "error": None if acc else error, "validation_accuracy": acc}

    rows = [row(task, lr, seed, acc) for task in ("yesno", "sst2") for seed in (0, 1)
            for lr, acc in ((3e-3, 0.60), (1e-2, 0.70), (3e-2, 0.80))]
    rows += [row("yesno", 1e-1, seed, None) for seed in (0, 1)] + [row("sst2", 1e-1, seed, 0.82) for seed in (0, 1)]
    choice = grid.grid_choice(pd.DataFrame(rows), "lopt2", ["yesno", "sst2"])
    assert choice["by"] == "stability margin" and choice["lr"] == 1e-2
    assert choice["refused"][3e-2] == "the next rate up (0.1) diverged" and choice["refused"][1e-1] == "diverged"
    assert 1e-1 not in grid.accuracy(pd.DataFrame(rows), "lopt2", "yesno")  # the tables of means leave it out
    assert grid.diverged_seeds(pd.DataFrame(rows), "lopt2", "yesno") == {0.1: (2, 2)}
    mixed = [r for r in rows if not (r["task_name"] == "yesno" and r["lr"] == 1e-1 and r["seed"] == 0)]
    mixed.append(row("yesno", 1e-1, 0, 0.99))  # one seed at 99%, the other diverged: no mean to rank it by
    assert 1e-1 not in grid.accuracy(pd.DataFrame(mixed), "lopt2", "yesno")
    assert grid.diverged_seeds(pd.DataFrame(mixed), "lopt2", "yesno") == {0.1: (1, 2)}
    assert grid.grid_choice(pd.DataFrame(mixed), "lopt2", ["yesno", "sst2"])["lr"] == 1e-2


def test_a_label_with_training_options_is_its_own_grid():
    """lopt1_residual_wd is the residual LoPT-1 with weight decay: its points name the training options (the worker's
    train_options, part of the run's key), and its runs never count as lopt1_residual's or the other way round; the
    points of labels without training options are as before (their recorded keys stay valid)."""
    import pandas as pd

    from lopt_core.lab.sweep import run_key

    grid = harness("grid")
    wd, plain = (grid.point(label, 3e-2, {"task_name": "yesno"}, 0)
                 for label in ("lopt1_residual_wd", "lopt1_residual"))
    assert wd["train_options"] == {"weight_decay": 1.0} and plain["train_options"] == {"weight_decay": 0.0}  # pinned
    assert run_key(plain) == ("method=lopt1_prompt_len=20_rank=2_options=residual-True_lr=0.03_task_name=yesno_seed=0"
                              "_train_options=weight_decay-0.0")
    table = pd.DataFrame([{**wd, "status": "ok", "validation_accuracy": 0.9},
                          {**plain, "status": "ok", "validation_accuracy": 0.8}])
    assert grid.accuracy(table, "lopt1_residual_wd", "yesno") == {0.03: [0.9]}
    assert grid.accuracy(table, "lopt1_residual", "yesno") == {0.03: [0.8]}


def test_the_family_report_chooses_its_front_on_validation_and_reports_test():
    """benchmarks/family.py's table: per budget the mean of the seeds' test scores with paired differences against
    prompt tuning and LoPT-1 at that budget; the front is the validation one, though test would rank otherwise."""
    import pandas as pd

    harness("grid")  # benchmarks/ on the path
    family = importlib.import_module("family")
    rows = []
    # (label, budget, cost, validation, test): LoPT-1 validates best at 1k yet tests worst there
    cells = [("prompt tuning", 1000, 1000, 0.6, 0.8), ("LoPT-1", 1000, 990, 0.9, 0.5), ("DePT", 1000, 1200, 0.7, 0.9),
             ("prompt tuning", 9000, 9000, 0.95, 0.6), ("LoPT-1", 9000, 8800, 0.5, 0.95)]
    for label, budget, cost, val, test in cells:
        for seed, shift in enumerate((-0.02, 0.0, 0.02)):
            rows.append({"method": family.FAMILY[label][0], "budget": budget, "seed": seed, "status": "ok",
                         "task_name": "yesno", "validation_accuracy": val, "test_accuracy": test + shift, "lr": 1e-3,
                         "trainable_parameters": cost, "stored_parameters": cost, "seconds_per_step": 0.5})
    labels = {(family.FAMILY[label][0], budget): label for label, budget, *_ in cells}
    report = family.report(pd.DataFrame(rows), labels, ["yesno"])["yesno"]
    by = {(c["method"], c["budget"]): c for c in report["cells"]}
    assert by["DePT", 1000]["test_accuracy"] == pytest.approx(0.9) and by["DePT", 1000]["n"] == 3
    assert by["DePT", 1000]["paired"]["prompt tuning"]["mean"] == pytest.approx(0.1)
    assert by["DePT", 1000]["paired"]["LoPT-1"]["mean"] == pytest.approx(0.4)
    assert by["LoPT-1", 9000]["paired"]["prompt tuning"]["mean"] == pytest.approx(0.35)
    assert by["DePT", 1000]["sentence"].startswith("DePT at 1,000 trained parameters on yes/no: 90.0% [85.0, 95.0]: "
                                                   "ahead of prompt tuning (+10.0 points [")
    assert "behind LoPT-1 (-35.0 points [" in by["prompt tuning", 9000]["sentence"]  # every seed 35 points below
    table = family.markdown({"yesno": report}).splitlines()
    assert table[0] == "| method | yes/no, 1,000 | yes/no, 9,000 |"
    assert table[2:] == ["| prompt tuning | 80.0% [75.0, 85.0] | **60.0% [55.0, 65.0]** |",  # the front is bold
                         "| LoPT-1 | **50.0% [45.0, 55.0]** | 95.0% [90.0, 100.0] |",
                         "| DePT | 90.0% [85.0, 95.0] | left out |"]
    assert report["front"] == [("LoPT-1", 1000), ("prompt tuning", 9000)]  # by test: all four of the others


def test_the_family_reports_a_budget_only_once_every_run_of_it_has_finished(capsys):
    """A part-way record (the sweep outlasts a session) states no figure of a budget until all its seeds ran."""
    import pandas as pd

    harness("grid")
    family = importlib.import_module("family")
    points = [{"method": m, "budget": b, "seed": s} for b in (1000, 9000) for m in ("lopt1", "dept") for s in (0, 1)]
    rows = [{**p, "status": "ok"} for p in points if not (p["budget"] == 9000 and p["seed"] == 1)]
    rows.append({**points[-1], "status": "failed"})  # a failed run does not finish its budget either
    kept = family.complete_budgets(pd.DataFrame(rows), points)
    assert set(kept["budget"]) == {1000} and len(kept) == 4
    assert "budget 9,000: 2 of 4 runs finished; not reported until all have" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no budget has finished every run yet"):
        family.complete_budgets(pd.DataFrame(rows[1:]), [p for p in points if p["budget"] == 1000])


def test_the_family_trains_each_method_at_its_own_forms_grid_rate():
    """benchmarks/family.py reads each method's rate from a grid label: the label of the form it builds (the default,
    the table for the prefix), so the rate is the method's own ``recommended_lr`` wherever that grid has run (it once
    read LoPT-2's from the paper's form, at 3e-3 against the default's 1e-2); ``check_forms`` refuses a mismatch."""
    from lopt_core.lab import analysis

    harness("grid")
    family = importlib.import_module("family")
    tiny = backbone("tiny-llama")
    configs, lrs = {}, {}
    for label, (method, grid_label) in family.FAMILY.items():
        assert harness("grid").GRIDS[grid_label][0] == method, label
        if grid_label not in GRID["results"] or GRID["results"][grid_label]["waiting_for"]:
            continue  # its grid has not run, or only part-way: the family leaves it out
        lrs[label] = GRID["results"][grid_label]["recommended_lr"]
        assert harness("grid").recommended_rate(grid_label, decided=True) == lrs[label]
        for budget in (300, 1000):  # sizes on the tiny backbone (d = 64)
            found = analysis.family_at_budget(tiny, budget, [method])[method]
            if found is not None:
                configs[label, budget] = found
    assert {label for label, _ in configs} >= {"prompt tuning", "LoPT-1", "LoPT-2", "prefix table", "residual PT"}
    family.check_forms(configs, lrs, tiny)
    with pytest.raises(SystemExit, match="names another form"):
        family.check_forms(configs, {**lrs, "LoPT-2": GRID["results"]["lopt2"]["recommended_lr"]}, tiny)
    quality = harness("quality")
    for (label, budget), config in configs.items():  # every point names its form: nothing for the sweep to pin
        point = family.point(label, config, lrs[label], {"task_name": "yesno"}, 0, budget)
        assert quality.explicit(point) is point, label
    assert family.point("LoPT-1", configs["LoPT-1", 300], 3e-2, {}, 0, 300)["train_options"] == {"weight_decay": 1.0}


def test_a_changed_default_is_pinned_in_old_points_and_records(tmp_path):
    """LoPT-1 became residual by default, with weight decay 1: a recorded run that named no form trained the plain U V
    without decay, so the record and every script's point name ``residual: False`` and ``weight_decay: 0.0``
    (appended), and keys computed either way agree."""
    from lopt_core.lab.sweep import run_key
    from lopt_core.utils import read_json, write_json

    quality = harness("quality")
    assert quality.changed_defaults("lopt1") == ({"residual": False}, {"weight_decay": 0.0})
    assert quality.changed_defaults("lopt2") == ({"residual": False}, {})  # LoPT-2 became residual later, no decay
    assert quality.changed_defaults("prompt_tuning") == ({}, {}) and quality.changed_defaults("peft_lora") == ({}, {})
    old = {"method": "lopt1", "prompt_len": 20, "rank": 2, "lr": 0.003, "seed": 0, "task_name": "yesno"}
    graded = {**old, "options": {"lr_ratio": 4.0}}
    residual = {**old, "options": {"residual": True}}
    pt = {"method": "prompt_tuning", "prompt_len": 20, "rank": 0, "lr": 0.003, "seed": 0, "task_name": "yesno"}
    decayed = {**old, "options": {"residual": True}, "train_options": {"weight_decay": 1.0}}
    assert quality.explicit(old) == {**old, "options": {"residual": False}, "train_options": {"weight_decay": 0.0}}
    assert quality.explicit(graded)["options"] == {"lr_ratio": 4.0, "residual": False}
    assert quality.explicit(residual)["train_options"] == {"weight_decay": 0.0}  # it ran before the decay
    assert quality.explicit(decayed) is decayed and quality.explicit(pt) is pt
    runs = [{"key": run_key(p), "status": {"params": p, "status": "ok"},
             "metrics": {**quality.named(p), "validation_accuracy": 0.5}}
            for p in (old, graded, residual, decayed, pt)]
    record, out = tmp_path / "x_runs.json", tmp_path / "runs"
    write_json(record, {"about": "test", "runs": runs})
    (out / run_key(old)).mkdir(parents=True)
    write_json(out / run_key(old) / "status.json", {"params": old, "status": "ok"})
    assert quality.pin_changed_defaults(record, out) == 3
    keys = {run["key"] for run in read_json(record)["runs"]}
    assert keys == {run_key(quality.explicit(p)) for p in (old, graded, residual, decayed, pt)}
    assert {run["metrics"].get("train_options", {}).get("weight_decay") for run in read_json(record)["runs"]
            if run["status"]["params"]["method"] == "lopt1"} == {0.0, 1.0}
    assert read_json(out / run_key(quality.explicit(old)) / "status.json")["params"]["options"] == {"residual": False}
    assert not (out / run_key(old)).exists()
    assert quality.pin_changed_defaults(record, out) == 0  # once is enough
    grid = harness("grid")  # the grid's plain label builds the pinned point
    assert run_key(grid.point("lopt1", 0.003, {"task_name": "yesno"}, 0)) == run_key(
        quality.explicit({"method": "lopt1", "prompt_len": 20, "rank": 2, "options": {}, "lr": 0.003,
                          "task_name": "yesno", "seed": 0}))


def test_every_grid_point_builds_its_method():
    """A grid point builds as the worker builds it: its options and prompt length, and its rank for every method that
    has one (the point's 0 means "no rank" only to the others). DePT's grid once named no rank, so each of its runs
    failed with rank=0 before a step; every label now builds on the tiny backbone."""
    from lopt_core.methods import build_method, with_rank

    grid = harness("grid")
    for label, (_, _, rates) in grid.GRIDS.items():
        point = grid.point(label, rates[0], {"task_name": "yesno"}, 0)
        options = {**point.get("options", {}), "prompt_len": point["prompt_len"], "seed": 0}
        options = with_rank(point["method"], options, point["rank"])  # as the worker does
        method = build_method(point["method"], backbone("tiny-llama"), **options)
        assert method.trainable_parameters() > 0, label


def test_a_grid_recorded_part_way_has_no_decided_rate():
    """A grid stopped part-way (runs committed across sessions) has a best mean so far, not the rule's choice:
    ``recommended_rate(decided=True)`` (what benchmarks/family.py asks) refuses it and says what to run."""
    grid = harness("grid")
    part_way = [label for label, row in GRID["results"].items() if row["waiting_for"]]
    decided = [label for label, row in GRID["results"].items() if not row["waiting_for"]]
    assert decided
    for label in decided:
        assert grid.recommended_rate(label, decided=True) == GRID["results"][label]["recommended_lr"]
    for label in part_way:
        with pytest.raises(ValueError, match="part-way"):
            grid.recommended_rate(label, decided=True)
