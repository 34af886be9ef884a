"""The prompt family side by side at equal trainable budgets, under one protocol.

    python benchmarks/family.py [--out ../runs/family] [--data ../../shared/data/sst2] [--tasks yesno sst2]
                                [--seeds 0 1 2] [--budgets 1192 2304 11520] [--record-only]

Every input-prompt method of the kit (prompt tuning, LoPT-1, LoPT-2, DePT, residual prompt tuning, P-tuning) and a
raw prefix table, each at two or three equal **trainable** budgets. By default the budgets are sizes of reference
configurations on the backbone: LoPT-1 at n = 20, r = 2 (1,192 on the embedded SmolLM2-135M), prompt tuning at n = 4
(2,304) and at n = 20 (11,520). A method's configuration at a budget comes from ``analysis.family_at_budget``: its
prompt length (LoPT's rank, at n = 20) is searched for the count nearest the budget; a second size (DePT's rank,
residual prompt tuning's bottleneck, P-tuning's encoder width) is first set so that it spends about half the budget.
A method that cannot come within 20% of a budget (residual prompt tuning's MLP alone outgrows 1.2k) is left out of
it, and the table says so. Methods that store less than they train (residual prompt tuning and P-tuning keep only
the prompt they make) report both counts.

Protocol (the grid's and ``sst2_lopt.py``'s): embedded backbone, profile ``cpu`` (120 steps, batch 8), validation
selects the checkpoint (yes/no: 150 rows; SST-2: 500 of dev.tsv's 872 scored during training), test reports, once
per run (yes/no: 150 rows; SST-2: test.tsv's 1,821); seeds 0, 1, 2. Each method trains at the rate its grid
recommends (``harness.grid.recommended_rate``: the stability rule over both tasks, at the grid's size) whatever its
size here; a method whose grid has not run is left out, with the command that runs it.

The runs are a resumable sweep of the worker notebook, recorded in ``results/family_runs.json`` (committed: the
sweep resumes on another machine); order: budget by budget, seed 0 of everything first. Then, per task and budget:
mean test accuracy with its 95% interval, paired differences (per seed) against prompt tuning and against LoPT-1 at
the same budget, trainable and stored parameters, median seconds per step; per task the Pareto front, chosen on
validation accuracy and drawn at test. A budget is reported only once every one of its runs has finished (a
part-way record prints how many have). Writes ``results/family.json`` and ``results/family_pareto.png``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lopt_core.lab import analysis
from lopt_core.lab.sweep import gather, run_key
from lopt_core.methods import build_method
from lopt_core.model import load_backbone

from harness.grid import GRIDS, TRAIN_OPTIONS, built_options, recommended_rate, recorded_runs
from harness.quality import Sweep, intervals, paired_differences
from harness.results import RESULTS, RUNS, TASK_TITLES, data_option, save

RECORD = RESULTS / "family_runs.json"
ABOUT = "finished runs of benchmarks/family.py (equal trainable budgets; validation selects, test reports)"

# label → (method, the grid label of its rate: the label that trained the form the family builds, each method's
# default; ``main`` checks it against the method's own recommended_lr); sizes from ``analysis.family_at_budget``
FAMILY = {
    "prompt tuning": ("prompt_tuning", "prompt_tuning"), "LoPT-1": ("lopt1", "lopt1_residual_wd"),
    "LoPT-2": ("lopt2", "lopt2_residual"),
    "DePT": ("dept", "dept"), "residual PT": ("residual_prompt_tuning", "residual_pt"),
    "P-tuning": ("p_tuning", "p_tuning"), "prefix table": ("prefix_tuning", "prefix_table"),
}
# the budgets' reference configurations: (method, options)
REFERENCES = [("lopt1", {"prompt_len": 20, "rank": 2}), ("prompt_tuning", {"prompt_len": 4}),
              ("prompt_tuning", {"prompt_len": 20})]
PAIRED = ("mean", "low", "high", "n", "verdict", "text")  # what a paired difference keeps
VERDICTS = {"ahead": "ahead of {}", "behind": "behind {}", "indistinguishable": "indistinguishable from {}",
            "undecided": "against {}"}  # one seed: points() says so
DATASETS = {"yesno": {"task_name": "yesno"}, "sst2": {"task_name": "sst2", "eval_limit": 500}}


def budgets_of(backbone) -> list[int]:
    """The default budgets: the trainable sizes of the reference configurations on ``backbone``."""
    return [build_method(name, backbone, **options).trainable_parameters() for name, options in REFERENCES]


def form(label: str) -> tuple[dict, dict]:
    """The build and training options of the form ``label`` trains, as its grid label trained it (LoPT-1's default:
    ``residual: True`` and weight decay 1), sizes left out: named in every point, so that ``quality.explicit`` finds
    nothing to pin (a point that named no form would be pinned to the form of the oldest records, the paper's)."""
    grid = FAMILY[label][1]
    return built_options(GRIDS[grid][1]), dict(TRAIN_OPTIONS.get(grid, {}))


def point(label: str, config: dict, lr: float, dataset: dict, seed: int, budget: int) -> dict:
    """The worker's parameters for one run (``budget`` is recorded with it, so a table groups by it)."""
    built, trained = form(label)
    sizes = built_options(config["options"])
    return {"method": FAMILY[label][0], "prompt_len": config["options"].get("prompt_len", 20),
            "rank": config["options"].get("rank", 0), "options": {**built, **sizes}, "lr": lr, **dataset,
            "seed": seed, "budget": budget, **({"train_options": trained} if trained else {})}


def rates(labels: list[str]) -> dict[str, float]:
    """label → the rate its grid recommends; labels whose grid has not run are left out (and said)."""
    out, table = {}, recorded_runs()  # the record, read once
    for label in labels:
        grid = FAMILY[label][1]
        try:
            out[label] = recommended_rate(grid, table=table, decided=True)
        except ValueError as err:
            print(f"{label}: left out: {err}", flush=True)
    return out


def check_forms(configs: dict, lrs: dict, backbone) -> None:
    """Each configuration's method, built as the family builds it, recommends the rate of the grid label it trains
    at: the grid trained that form (LoPT-2's label once named the paper's form, at a third of the default's rate)."""
    for (label, b), config in configs.items():
        own = build_method(FAMILY[label][0], backbone, **{**form(label)[0], **config["options"]}).recommended_lr
        if own != lrs[label]:
            raise SystemExit(f"{label} at {b:,}: its grid label {FAMILY[label][1]!r} recommends {lrs[label]:g}, the "
                             f"method as built here recommends {own:g}: the label names another form of the method")


def complete_budgets(table: pd.DataFrame, points: list[dict]) -> pd.DataFrame:
    """The rows of the budgets whose every planned run (method, task, seed) has finished; a budget part-way is
    said and left out, so that no figure is reported before all its seeds have run."""
    ok = table[table["status"] == "ok"]
    keep = []
    for b in sorted({p["budget"] for p in points}):
        planned = sum(p["budget"] == b for p in points)
        finished = int((ok["budget"] == b).sum())
        if finished >= planned:
            keep.append(b)
        else:
            print(f"budget {b:,}: {finished} of {planned} runs finished; not reported until all have",
                  flush=True)
    if not keep:
        raise SystemExit("no budget has finished every run yet: run this script without --record-only")
    return table[table["budget"].isin(keep)]


def report(table: pd.DataFrame, labels: dict, tasks: list[str]) -> dict:
    """Per task and budget: intervals, paired differences against prompt tuning and LoPT-1, sizes and step time;
    per task the Pareto front chosen on validation (mean over seeds) among the (method, budget) cells."""
    table = table[table["status"] == "ok"].copy()
    table["label"] = [labels[(m, b)] for m, b in zip(table["method"], table["budget"], strict=True)]
    out = {}
    for task, part in table.groupby("task_name", sort=False):
        cells = []
        for budget, rows in part.groupby("budget", sort=True):
            summary = {r["label"]: r for r in intervals(rows, ["label"], "test_accuracy")}
            validation = rows.groupby("label")["validation_accuracy"].mean()
            for label, r in summary.items():
                mine = rows[rows["label"] == label]
                cells.append({"budget": int(budget), "method": label, "test_accuracy": r["mean"], "low": r["low"],
                              "high": r["high"], "n": r["n"], "seeds": r["values"],
                              "validation_accuracy": float(validation[label]),
                              "trainable_parameters": int(mine["trainable_parameters"].iloc[0]),
                              "stored_parameters": int(mine["stored_parameters"].iloc[0]),
                              "lr": float(mine["lr"].iloc[0]),
                              "seconds_per_step": float(mine["seconds_per_step"].median())})
            for baseline in ("prompt tuning", "LoPT-1"):
                if baseline in summary and len(summary) > 1:
                    for d in paired_differences(rows, "test_accuracy", baseline=baseline, by="label"):
                        cell = next(c for c in cells if c["budget"] == budget and c["method"] == d["label"])
                        cell.setdefault("paired", {})[baseline] = {k: d[k] for k in PAIRED}
        for cell in cells:
            cell["sentence"] = sentence(cell, task)
        front = analysis.pareto_front(pd.DataFrame(cells), cost="trainable_parameters", score="validation_accuracy")
        out[task] = {"cells": cells, "front": [(c["method"], c["budget"]) for c in front.to_dict(orient="records")]}
    return out


def points(low: float, high: float) -> str:
    """``[a, b]`` in percentage points (or ``one seed`` when there is no interval)."""
    return "one seed" if pd.isna(low) or pd.isna(high) else f"[{100 * low:.1f}, {100 * high:.1f}]"


def sentence(cell: dict, task: str) -> str:
    """One cell in plain words: its test accuracy with its interval and, against each baseline at its budget, ahead,
    behind or indistinguishable, with the paired interval that says so."""
    said = [f"{VERDICTS[d['verdict']].format(baseline)} ({100 * d['mean']:+.1f} points {points(d['low'], d['high'])})"
            for baseline, d in cell.get("paired", {}).items()]
    head = (f"{cell['method']} at {cell['budget']:,} trained parameters on {TASK_TITLES.get(task, task)}: "
            f"{100 * cell['test_accuracy']:.1f}% {points(cell['low'], cell['high'])}")
    return head + (": " + "; ".join(said) if said else "")


def markdown(results: dict) -> str:
    """docs/results.md's (and the README's) table: one row per method, one column per task and budget, the mean test
    accuracy over seeds with its 95% interval; bold where the cell is on its task's front (chosen on validation),
    "left out" where the method has no configuration at that budget."""
    columns = [(task, b) for task, r in results.items() for b in sorted({c["budget"] for c in r["cells"]})]
    methods = [m for m in FAMILY if any(c["method"] == m for r in results.values() for c in r["cells"])]
    cells = {(task, c["method"], c["budget"]): c for task, r in results.items() for c in r["cells"]}
    fronts = {(task, m, b) for task, r in results.items() for m, b in r["front"]}
    lines = ["| method | " + " | ".join(f"{TASK_TITLES.get(t, t)}, {b:,}" for t, b in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for m in methods:
        row = []
        for t, b in columns:
            c = cells.get((t, m, b))
            text = "left out" if c is None else f"{100 * c['test_accuracy']:.1f}% {points(c['low'], c['high'])}"
            row.append(f"**{text}**" if (t, m, b) in fronts else text)
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    from lopt_core.evaluation import plots

    tasks = list(results)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6), layout="constrained", squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        cells = pd.DataFrame(results[task]["cells"])
        plots.budget_front(cells, analysis.pareto_front(cells, score="validation_accuracy"), ax=ax)
        ax.set_title(f"{task}: test accuracy (95% interval) against trainable parameters")
    plots.save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RUNS / "family"))
    data_option(parser, "sst2")
    parser.add_argument("--tasks", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="trainable budgets (default: LoPT-1 n = 20 r = 2, prompt tuning n = 4 and n = 20)")
    parser.add_argument("--methods", nargs="+", default=list(FAMILY), choices=list(FAMILY))
    parser.add_argument("--record-only", action="store_true", help="report the recorded runs; train nothing")
    args = parser.parse_args()
    backbone = load_backbone("embedded")
    budgets = args.budgets or budgets_of(backbone)
    lrs = rates(args.methods)
    configs = {}
    for b in budgets:
        sizes = analysis.family_at_budget(backbone, b, [FAMILY[label][0] for label in lrs])
        for label in lrs:
            if sizes[FAMILY[label][0]] is None:
                print(f"{label} at {b:,}: left out (no configuration within 20% of the budget)", flush=True)
            else:
                configs[label, b] = sizes[FAMILY[label][0]]
    datasets = {t: {**DATASETS[t], **({"task_path": str(Path(args.data).resolve())} if t == "sst2" else {})}
                for t in args.tasks}
    points = [point(label, configs[label, b], lrs[label], datasets[t], s, b)
              for b in budgets for s in args.seeds for t in datasets for label in lrs if (label, b) in configs]
    check_forms(configs, lrs, backbone)
    for (label, b), c in configs.items():
        print(f"budget {b:,}: {label:14s} {c['options']} trains {c['trainable_parameters']:,}, stores "
              f"{c['stored_parameters']:,}, lr {lrs[label]:g}", flush=True)
    sweep = Sweep(Path(args.out), RECORD, ABOUT)
    sweep.restore()
    if args.record_only:
        print(f"{sweep.save_record()} finished runs recorded in {RECORD}")
        table = gather(Path(args.out), [p for p in points if (Path(args.out) / run_key(p) / "status.json").is_file()])
    else:
        table = sweep.run(points, strict=False)
    if "status" not in table or not (table["status"] == "ok").any():
        raise SystemExit(f"no finished run under {args.out} yet: run this script without --record-only")
    table = complete_budgets(table, points)
    labels = {(FAMILY[label][0], b): label for (label, b) in configs}
    results = report(table, labels, list(datasets))
    plot(results, RESULTS / "family_pareto.png")
    path = save("family", {"protocol": {"steps": 120, "batch_size": 8, "seeds": args.seeds, "budgets": budgets,
                                        "tasks": datasets, "selection": "validation; test scored once per run",
                                        "learning_rates": lrs,
                                        "configurations": {f"{label} @ {b}": c for (label, b), c in configs.items()}},
                           "results": results}, backbone.device)
    for task, r in results.items():
        for c in r["cells"]:
            print(c["sentence"] + f" (n = {c['n']})")
        print(f"{task}: Pareto front (validation): {r['front']}")
    print(markdown(results))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
