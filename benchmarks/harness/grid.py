"""The learning-rate grid of ``lr_grid.py``: its method labels and their grids, the sweep point of a label at a
rate, and the rates its committed record (``results/lr_grid_runs.json``) recommends. Other reports read their
rates from here, and tests/test_benchmarks.py ties every method's ``recommended_lr`` to them."""
from __future__ import annotations

from lopt_core.utils import read_json

from harness.results import RESULTS

RECORD = RESULTS / "lr_grid_runs.json"  # every finished run, committed: the grid resumes across machines
ABOUT = "finished runs of benchmarks/lr_grid.py (validation only; test never scored)"

# label -> (registered method, its options, the rates of the grid)
GRIDS = {
    "prompt_tuning": ("prompt_tuning", {"prompt_len": 20}, [3e-3, 1e-2, 3e-2, 1e-1]),
    "lopt1": ("lopt1", {"prompt_len": 20, "rank": 2}, [3e-3, 1e-2, 3e-2, 1e-1]),
    "lopt2": ("lopt2", {"prompt_len": 20, "rank": 2}, [3e-3, 1e-2, 3e-2, 1e-1]),
    "prefix_tuning": ("prefix_tuning", {"prompt_len": 10}, [3e-4, 1e-3, 3e-3]),  # through the MLP (k = 512)
    "prefix_table": ("prefix_tuning", {"prompt_len": 10, "reparam": False}, [3e-3, 1e-2, 3e-2]),
    "iapt": ("iapt", {"prompt_len": 4, "bottleneck": 32}, [3e-4, 1e-3, 3e-3]),
    "iapt_m1": ("iapt", {"prompt_len": 4, "bottleneck": 1}, [3e-4, 1e-3, 3e-3]),  # the ~35k budget of iapt_report
}


def point(label: str, lr: float, dataset: dict, seed: int) -> dict:
    """The sweep point of ``label`` at rate ``lr`` on ``dataset`` (task name, path, ...) with ``seed``."""
    name, options, _ = GRIDS[label]
    opts = {k: v for k, v in options.items() if k not in ("prompt_len", "rank")}
    return {"method": name, "prompt_len": options["prompt_len"], "rank": options.get("rank", 0), "options": opts,
            "lr": float(f"{lr:.3g}"), **dataset, "seed": seed}


def accuracy(table, label: str, task: str) -> dict[float, list[float]]:
    """rate → validation accuracies of the finished runs of ``label`` on ``task``."""
    want = point(label, 0.0, {}, 0)  # the label's method, prompt length, rank and options
    out: dict[float, list[float]] = {}
    for row in table.to_dict(orient="records"):
        if (row.get("status") == "ok" and row["task_name"] == task
                and all(row[k] == want[k] for k in ("method", "prompt_len", "rank", "options"))):
            out.setdefault(row["lr"], []).append(row["validation_accuracy"])
    return out


def tuned_rates(task: str, labels: list[str] | None = None) -> dict[str, dict]:
    """Per method label: the rate of the grid with the best validation accuracy on ``task`` (seeds averaged), read
    from the committed record, with that accuracy, the seeds behind it and whether it sits at the grid's edge
    (then the grid is not finished there). Labels with no finished run on ``task`` are left out."""
    import pandas as pd

    runs = read_json(RECORD)["runs"] if RECORD.is_file() else []
    rows = [{"rank": 0, "options": {}, **run["status"]["params"], "status": run["status"]["status"],
             "validation_accuracy": run["metrics"].get("validation_accuracy")} for run in runs]
    table = pd.DataFrame(rows)
    out = {}
    for label in labels or list(GRIDS):
        acc = accuracy(table, label, task) if len(table) else {}
        if not acc:
            continue
        means = {lr: sum(v) / len(v) for lr, v in acc.items()}
        best = max(means, key=means.get)
        out[label] = {"lr": best, "validation_accuracy": means[best], "seeds": len(acc[best]),
                      "at_edge": best in (min(means), max(means)), "grid": dict(sorted(means.items())),
                      "runs": {lr: len(v) for lr, v in sorted(acc.items())}}
    return out


def recommended_rate(label: str, tasks: tuple[str, ...] = ("yesno", "sst2")) -> float:
    """The recommended rate of ``label`` from the committed record: the best validation accuracy averaged over the
    tasks (each task's seeds averaged first), over the rates every task has."""
    found = {task: tuned_rates(task, [label]).get(label) for task in tasks}
    missing = [task for task, row in found.items() if row is None]
    if missing:
        raise ValueError(f"no finished grid run of {label!r} on {', '.join(missing)} in {RECORD}: run "
                         f"`python benchmarks/lr_grid.py --only {label}` first")
    both = mean_over_tasks({task: row["grid"] for task, row in found.items()})
    return max(both, key=both.get)


def mean_over_tasks(per_task: dict[str, dict[float, float]]) -> dict[float, float]:
    """rate → validation accuracy averaged over the tasks, for the rates that every task has."""
    common = set.intersection(*(set(v) for v in per_task.values()))
    return {lr: sum(v[lr] for v in per_task.values()) / len(per_task) for lr in common}


def demo_rates_record(profile: dict) -> str:
    """The record of the demo's rates for a profile (its ``to_dict()``), at its budget and method options
    (``results/NAME.json``): e.g. ``demo_rates_60_steps``, or ``demo_rates_60_steps_residual`` when the profile trains
    LoPT's residual form."""
    options = sorted({key for opts in profile.get("method_options", {}).values() for key in opts})
    return f"demo_rates_{profile['steps']}_steps" + "".join(f"_{key}" for key in options)


def profile_settings(profile: dict) -> dict:
    """A profile's settings other than its rates: what makes two recorded runs comparable (each run records the rate
    it trained at). Tuples as lists: as a JSON record holds them."""
    profile = {"method_options": {}, **profile}  # records from before profiles had method options: none
    return {k: list(v) if isinstance(v, tuple) else v for k, v in profile.items() if k != "learning_rates"}


def stable_choice(by_rate: dict[float, list[float | None]], margin: float = 0.10, min_seeds: int = 2) -> dict:
    """The rate a grid may recommend: the best mean validation accuracy over the seeds among the rates that hold.

    ``by_rate``: rate → one validation accuracy per seed (None: that seed diverged). A rate is refused when any of
    its seeds diverged, when it has fewer than ``min_seeds`` seeds, or when it has no stability margin: the next
    rate up (half a decade in these grids) diverged on some seed, fell more than ``margin`` below it (mean over
    seeds), or was not run. A rate at the edge of stability turns the float differences between two machines into
    a different outcome; a rate one step below a cliff is refused too.

    Returns {"lr": the choice or None, "mean": rate → mean (None: diverged), "refused": rate → why}."""
    rates = sorted(by_rate)
    mean = {lr: None if any(v is None for v in by_rate[lr]) or not by_rate[lr] else
            sum(by_rate[lr]) / len(by_rate[lr]) for lr in rates}
    refused = {}
    for i, lr in enumerate(rates):
        above = rates[i + 1] if i + 1 < len(rates) else None
        if mean[lr] is None:
            refused[lr] = "diverged"
        elif len(by_rate[lr]) < min_seeds:
            refused[lr] = f"{len(by_rate[lr])} seed(s), fewer than {min_seeds}"
        elif above is None:
            refused[lr] = "no rate above it was run (its stability margin is unknown)"
        elif mean[above] is None:
            refused[lr] = f"the next rate up ({above:g}) diverged"
        elif mean[above] < mean[lr] - margin:
            refused[lr] = (f"the next rate up ({above:g}) fell {100 * (mean[lr] - mean[above]):.1f} points "
                           f"(more than {100 * margin:.0f})")
    eligible = [lr for lr in rates if lr not in refused]
    return {"lr": max(eligible, key=lambda lr: mean[lr]) if eligible else None, "mean": mean, "refused": refused}
