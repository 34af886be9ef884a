"""Why LoPT lags on yes/no (issue: capacity, start or optimisation?). Part 1, capacity per rank: LoPT-1 at
r ∈ {1, 2, 4, 8, 20} beside prompt tuning, n = 20, the grid's budget (120 steps, batch 8, profile ``cpu``), every
method at the same rate (3e-3, both methods' recommended rate), validation selects, test reports.

At r = n = 20 LoPT-1 can express every prompt prompt tuning can and starts from the same prompt (the SVD of the
vocabulary start is exact), so a gap left there is the factorisation's optimisation, not its capacity.

    python benchmarks/lopt_diagnosis.py [--tasks yesno sst2] [--seeds 0 1 2] [--out ../runs/lopt_diagnosis]

A resumable sweep of the worker notebook: finished runs are skipped, and recorded in
``results/lopt_diagnosis_runs.json`` (committed) so the sweep resumes on another machine. Prints the table of
test accuracy per (task, rank) with 95% intervals over the seeds run, and the paired difference against prompt
tuning; writes ``results/lopt_diagnosis.json``. Each run keeps its dynamics in its folder's history.csv
(``lopt-kit dynamics FOLDER/run``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.quality import Sweep, intervals, paired_differences
from harness.results import RESULTS, RUNS, SHARED_DATA, save

RECORD = RESULTS / "lopt_diagnosis_runs.json"
ABOUT = "finished runs of benchmarks/lopt_diagnosis.py (validation selects, test reports)"
RANKS = (1, 2, 4, 8, 20)
LR = 3e-3


def points(tasks: list[str], seeds: list[int], ranks: list[int]) -> list[dict]:
    """Seed-major, task by task: a stopped sweep leaves every configuration with the same seeds."""
    out = []
    for seed in seeds:
        for task in tasks:
            data = {"task_name": task}
            if task == "sst2":  # real SST-2: dev.tsv selects (500 rows scored during training), test.tsv reports
                data.update(task_path=str((SHARED_DATA / "sst2").resolve()), eval_limit=500)
            out.append({"method": "prompt_tuning", "prompt_len": 20, "rank": 0, "lr": LR, "seed": seed, **data})
            out += [{"method": "lopt1", "prompt_len": 20, "rank": r, "lr": LR, "seed": seed, **data} for r in ranks]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RUNS / "lopt_diagnosis"))
    parser.add_argument("--tasks", nargs="+", default=["yesno", "sst2"], choices=["yesno", "sst2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ranks", type=int, nargs="+", default=list(RANKS))
    args = parser.parse_args()
    sweep = Sweep(Path(args.out), RECORD, ABOUT)
    sweep.restore()
    table = sweep.run(points(args.tasks, args.seeds, args.ranks), steps=120)
    table["label"] = [m if m == "prompt_tuning" else f"lopt1 (r={r})"
                      for m, r in zip(table["method"], table["rank"], strict=True)]
    table["task"] = table["task_name"]
    summary = intervals(table, ["task", "label"], "test_accuracy")
    differences = [{"task": task, **d} for task, part in table.groupby("task")
                   for d in paired_differences(part, "test_accuracy", baseline="prompt_tuning", by="label")]
    path = save("lopt_diagnosis", {"lr": LR, "steps": 120, "summary": summary, "differences": differences,
                                   "runs": table[["task", "label", "rank", "seed", "validation_accuracy",
                                                  "test_accuracy", "best_step"]].to_dict(orient="records")})
    for row in summary:
        print(f"{row['task']:6s} {row['label']:15s} {100 * row['mean']:.1f}% [{100 * row['low']:.1f}, "
              f"{100 * row['high']:.1f}] n={row['n']}")
    print("\n".join(f"{d['task']}: {d['text']}" for d in differences))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
