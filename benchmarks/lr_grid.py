"""Learning rates tuned on validation: a grid per method family, as papermill sweeps of the worker notebook.

    python benchmarks/lr_grid.py [--out ../runs/lr_grid] [--data ../../shared/data/sst2]

Each method trains 120 steps (profile ``cpu``: batch 8, validation every 30 steps) at every rate of its
grid, on built-in yes/no and on real SST-2 (checkpoints kept by 150 validation rows and by 500 of dev.tsv's
rows; the accuracy recorded is the kept checkpoint's on the whole validation split, 150 and 872 rows), seeds 0
and 1 at every rate. Test rows are never scored
(``test=False``). A rate at the edge of its grid that wins on a task is followed, on that task, by the next
one out (half a decade), until the best rate is inside the grid or the grid has grown by three rates.
Runs are skipped when their folder already holds a finished run, so an interrupted grid resumes where it
stopped (seed 0 everywhere first, then seed 1). A run that diverged is recorded too, as a result of its rate
(the stability rule refuses the rate below it), and never retried. The recommended rate of a method
(``harness.grid.grid_choice``): per seed, the validation accuracy averaged over the two tasks; the best mean over
the seeds among the rates that hold a stability margin (``stable_choice``: two seeds, and the next rate up
neither diverged nor fell more than 10 points). Until seed 1 has run at every rate, the best mean over the tasks
(each task's seeds averaged first), as the grid chose before, with the runs the rule still waits for.
Writes ``benchmarks/results/lr_grid.json``.

The grid takes hours on 2 cores, more than one working session. Every finished run is also recorded in
``benchmarks/results/lr_grid_runs.json`` (its parameters and metrics, a few hundred bytes each), which is
committed: a later run of this script, on any machine, first writes those runs back as finished run folders
and trains only what is missing. ``--record-only`` records the finished runs of ``--out`` and prints the
table so far without training anything.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from lopt_core.evaluation.stats import mean_ci
from lopt_core.lab.sweep import gather

from harness.grid import (
    ABOUT,
    GRIDS,
    RECORD,
    TRAIN_OPTIONS,
    accuracy,
    grid_choice,
    mean_over_tasks,
    point,
    recorded_runs,
    tuned_rates,
)
from harness.quality import Sweep
from harness.results import RUNS, TASK_TITLES, data_option, save

STEP = math.sqrt(10)  # grids are spaced by half a decade
MAX_GROWTH = 3  # rates a grid may gain at its edges, per task


NAMES = {"prompt_tuning": "prompt tuning (n = 20)", "lopt1": "LoPT-1 (n = 20, r = 2)",
         "lopt2": "LoPT-2 (n = 20, r = 2)", "lopt1_residual": "LoPT-1, residual (n = 20, r = 2)",
         "lopt2_residual": "LoPT-2, residual (n = 20, r = 2)",
         "lopt1_residual_wd": "LoPT-1, residual, weight decay 1 (n = 20, r = 2)", "iapt_gated": "IAPT, gated (m = 32)",
         "prefix_tuning": "prefix-tuning, MLP (n = 10)", "prefix_table": "prefix-tuning, table (n = 10)",
         "iapt": "IAPT (m = 32)", "iapt_m1": "IAPT (m = 1)", "residual_pt": "residual prompt tuning (n = 20, m = 800)",
         "dept": "DePT (n = 20, r = 8, S = 256)", "p_tuning": "P-tuning, MLP (n = 20, h = d)"}


def rate_text(lr: float) -> str:
    """3e-3, 9.5e-4, 1e-1: two significant digits at most, the exponent without padding."""
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def markdown(tasks: list[str]) -> str:
    """docs/results.md's table of the recorded runs: validation accuracy per method, task and rate (seeds averaged,
    their count in brackets when more than one), the best rate of each row in bold, and in the last column the rate
    the grid's rule chooses for the method from both tasks (``grid_choice``: not always a row's bold one)."""
    table = recorded_runs()  # the record, read once
    tuned = {task: tuned_rates(task, table=table) for task in tasks}
    rows = {(label, task): tuned[task].get(label) for label in GRIDS for task in tasks}
    rates = sorted({lr for row in rows.values() if row for lr in [*row["grid"], *row["diverged"]]})
    chosen = {label: grid_choice(table, label, tasks) for label in GRIDS if any(rows[label, task] for task in tasks)}
    lines = ["| method | task | " + " | ".join(rate_text(lr) for lr in rates) + " | the rule's rate |",
             "|---|---|" + "---|" * (len(rates) + 1)]
    for (label, task), row in rows.items():
        if not row:
            continue
        cells = []
        for lr in rates:
            if lr in row["diverged"]:
                bad, run = row["diverged"][lr]
                cells.append(f"diverged ({bad} of {run} seeds)" if run > 1 else "diverged")
                continue
            if lr not in row["grid"]:
                cells.append("")
                continue
            n = row["runs"][lr]
            text = f"{100 * row['grid'][lr]:.1f}%" + (f" ({n} seeds)" if n > 1 else "")
            cells.append(f"**{text}**" if lr == row["lr"] else text)
        choice = chosen[label]
        rule = (rate_text(choice["lr"]) if choice["lr"] is not None else "none") + (
            "" if not choice["missing"] else " (waits for seed 1)")
        lines.append(f"| {NAMES[label]} | {TASK_TITLES[task]} | " + " | ".join(cells) + f" | {rule} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RUNS / "lr_grid"))
    data_option(parser, "sst2")
    parser.add_argument("--only", nargs="*", default=None, help="method labels to run (default: all)")
    parser.add_argument("--tasks", nargs="*", default=None, choices=["yesno", "sst2"],
                        help="tasks to run (default: both; the recommended rate needs both)")
    parser.add_argument("--record-only", action="store_true",
                        help="record the finished runs of --out and print the table so far; train nothing")
    args = parser.parse_args()
    out = Path(args.out)
    sweep = Sweep(out, RECORD, ABOUT)
    sweep.restore()
    datasets = {"yesno": {"task_name": "yesno"},
                "sst2": {"task_name": "sst2", "task_path": str(Path(args.data).resolve()), "eval_limit": 500}}
    labels = args.only or list(GRIDS)
    if args.tasks:
        datasets = {task: datasets[task] for task in args.tasks}
    if args.record_only:
        print(f"{sweep.save_record()} finished runs recorded in {RECORD}; the table so far:")
        print(f"written to {write_summary(out, datasets)}")
        print(markdown(list(datasets)))
        return
    rates = {(label, task): list(GRIDS[label][2]) for label in labels for task in datasets}  # grown per task

    def mean(acc, r):
        return sum(acc.get(r, [0.0])) / max(len(acc.get(r, [])), 1)

    while True:  # seeds 0 then 1 on every rate; extend a grid whose best rate is at its edge
        points = [point(label, lr, datasets[task], seed) for seed in (0, 1)
                  for (label, task), grid in rates.items() for lr in grid]
        table = sweep.run(points, strict=True, diverged_ok=True, test=False)  # a divergence is the rate's result
        grew = False
        for (label, task), grid in rates.items():
            if len(grid) >= len(GRIDS[label][2]) + MAX_GROWTH:
                continue
            acc = accuracy(table, label, task)
            best = max(grid, key=lambda r: mean(acc, r))
            for edge, beyond, at in ((grid[0], best / STEP, 0), (grid[-1], best * STEP, len(grid))):
                if best == edge and float(f"{beyond:.3g}") not in grid:
                    grid.insert(at, float(f"{beyond:.3g}"))
                    grew = True
        if not grew:
            break
    print(f"written to {write_summary(out, datasets)}")


def write_summary(out: Path, datasets: dict) -> Path:
    """results/lr_grid.json from every finished run of ``out`` (those of the record included), for every label of
    the grid with runs on every task, whichever labels this invocation trained: the summary is of the whole grid."""
    table = gather(out)
    labels = [label for label in GRIDS if all(accuracy(table, label, task) for task in datasets)]
    results = summarise(table, labels, datasets)  # every finished run, as docs/results.md's table shows them
    as_run = {f"{label} {task}": sorted(accuracy(table, label, task)) for label in labels for task in datasets}
    return save("lr_grid", {"config": {"steps": 120, "batch_size": 8, "seeds": "0 and 1 at every rate",
                                       "selection": "validation accuracy; test never scored",
                                       "tasks": datasets, "grids": {k: GRIDS[k][2] for k in labels},
                                       "grids_as_run": as_run},
                            "results": results})


def summarise(table, labels: list[str], datasets: dict) -> dict:
    """Per method: validation accuracy per task and rate (seeds averaged), their mean over the tasks, and the
    recommended rate (the best mean over the rates both tasks have). Printed as it goes."""
    results = {}
    for label in labels:
        per_task = {task: {lr: mean_ci(v).mean for lr, v in sorted(accuracy(table, label, task).items())}
                    for task in datasets}
        both = mean_over_tasks(per_task)
        runs = {task: {lr: v for lr, v in sorted(accuracy(table, label, task).items())} for task in datasets}
        choice = grid_choice(table, label, list(datasets))
        results[label] = {"method": GRIDS[label][0], "options": GRIDS[label][1],
                          "train_options": TRAIN_OPTIONS.get(label, {}), "validation_accuracy": runs,
                          "mean_over_seeds": per_task, "mean_over_tasks": both, "recommended_lr": choice["lr"],
                          "chosen_by": choice["by"], "refused": choice["refused"], "waiting_for": choice["missing"]}
        for task in datasets:
            print(f"{label:14s} {task:6s} " + "  ".join(f"{lr:g}: {v:.3f}" for lr, v in per_task[task].items()))
        if both:
            print(f"{label:14s} recommended lr {choice['lr']:g} by {choice['by']} (mean over tasks: "
                  + "  ".join(f"{lr:g}: {v:.3f}" for lr, v in sorted(both.items())) + ")")
    return results


if __name__ == "__main__":
    main()
