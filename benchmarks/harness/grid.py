"""The learning-rate grid of ``lr_grid.py``: its method labels and their grids, the sweep point of a label at a
rate, and the rates its committed record (``results/lr_grid_runs.json``) recommends. Other reports read their
rates from here, and tests/test_benchmarks.py ties every method's ``recommended_lr`` to them."""
from __future__ import annotations

from lopt_core.lab.profiles import Profile
from lopt_core.utils import read_json

from harness.quality import diverged, explicit
from harness.results import RESULTS

RECORD = RESULTS / "lr_grid_runs.json"  # every finished run, committed: the grid resumes across machines
ABOUT = "finished runs of benchmarks/lr_grid.py (validation only; test never scored)"

# label -> (registered method, its options, the rates of the grid)
GRIDS = {
    "prompt_tuning": ("prompt_tuning", {"prompt_len": 20}, [3e-3, 1e-2, 3e-2, 1e-1]),
    "lopt1": ("lopt1", {"prompt_len": 20, "rank": 2, "residual": False}, [3e-3, 1e-2, 3e-2, 1e-1]),  # U V
    "lopt2": ("lopt2", {"prompt_len": 20, "rank": 2, "residual": False}, [3e-3, 1e-2, 3e-2, 1e-1]),  # σ(X0 U) V
    # the residual forms X = X0 + (low-rank change) (lopt_diagnosis.py's fix; U = 0 or V = 0 at the start, so a
    # step moves X less than prompt tuning's: their grid starts half a decade higher)
    "lopt1_residual": ("lopt1", {"prompt_len": 20, "rank": 2, "residual": True}, [1e-2, 3e-2, 1e-1]),
    "lopt2_residual": ("lopt2", {"prompt_len": 20, "rank": 2, "residual": True}, [1e-2, 3e-2, 1e-1]),
    # the residual LoPT-1 with its change's scale bounded (TRAIN_OPTIONS): its best rate, 3e-2, fell off a cliff at 1e-1
    "lopt1_residual_wd": ("lopt1", {"prompt_len": 20, "rank": 2, "residual": True}, [1e-2, 3e-2, 1e-1]),
    "prefix_tuning": ("prefix_tuning", {"prompt_len": 10}, [3e-4, 1e-3, 3e-3]),  # through the MLP (k = 512)
    "prefix_table": ("prefix_tuning", {"prompt_len": 10, "reparam": False}, [3e-3, 1e-2, 3e-2]),
    "iapt": ("iapt", {"prompt_len": 4, "bottleneck": 32}, [3e-4, 1e-3, 3e-3]),
    "iapt_m1": ("iapt", {"prompt_len": 4, "bottleneck": 1}, [3e-4, 1e-3, 3e-3]),  # the ~35k budget of iapt_report
    # IAPT started at the frozen model (gate=True; its gates at their own gate_lr): item 4's grid
    "iapt_gated": ("iapt", {"prompt_len": 4, "bottleneck": 32, "gate": True}, [3e-5, 9.49e-5, 3e-4]),
    # issue 28's family: residual prompt tuning (the authors' m = 800; its branch starts at zero, so P trains from
    # prompt tuning's start: the grid is centred on prompt tuning's rate)
    "residual_pt": ("residual_prompt_tuning", {"prompt_len": 20}, [1e-3, 3e-3, 1e-2, 3e-2]),
    # DePT at the authors' r = 8, S = 256 beside an n = 20 prompt: the prompt's rate (A and B at 1e-2 × it). The rank
    # is named: a point's rank goes to every method that has one (the worker), and 0 means "none" for the others
    "dept": ("dept", {"prompt_len": 20, "rank": 8}, [1e-3, 3e-3, 1e-2, 3e-2]),
    # P-tuning as PEFT builds it (MLP encoder, h = d): its prompt starts from the encoder's output, not from words;
    # PEFT's own comparison trained it at 1e-4
    "p_tuning": ("p_tuning", {"prompt_len": 20}, [1e-4, 3e-4, 1e-3, 3e-3]),
}
# label -> the training options its runs take besides the rate (the worker's ``train_options``)
TRAIN_OPTIONS = {
    # decoupled weight decay 1: Adam moves an entry of U by about the rate per step and the decay takes rate × U back,
    # so |U| settles near 1 / weight_decay = 1, where a row's change U_i V is about X0's row norm (V's rows: norms
    # 3.1 and 1.9 on the embedded model; X0's rows about 3.2). At 1e-1 without it the change grew to 4-7 times X0
    # (docs/results.md, "The grid says no, for now").
    "lopt1_residual_wd": {"weight_decay": 1.0},
}


SIZES = ("prompt_len", "rank")  # a point names these apart from the options a method is built with


def built_options(options: dict) -> dict:
    """``options`` without the sizes (prompt length, rank): what a point names as its method's build options."""
    return {k: v for k, v in options.items() if k not in SIZES}


def point(label: str, lr: float, dataset: dict, seed: int) -> dict:
    """The sweep point of ``label`` at rate ``lr`` on ``dataset`` (task name, path, ...) with ``seed``, naming every
    option whose default changed since the first runs (``quality.explicit``)."""
    name, options, _ = GRIDS[label]
    opts = built_options(options)
    train = {"train_options": TRAIN_OPTIONS[label]} if label in TRAIN_OPTIONS else {}  # absent: older keys stay
    return explicit({"method": name, "prompt_len": options["prompt_len"], "rank": options.get("rank", 0),
                     "options": opts, **train, "lr": float(f"{lr:.3g}"), **dataset, "seed": seed})


def _train_options(row: dict) -> dict | None:
    """A run's training options as a point names them (a table cell without them is NaN or missing)."""
    value = row.get("train_options")
    return value if isinstance(value, dict) and value else None


def accuracy_by_seed(table, label: str, task: str, with_diverged: bool = False) -> dict[float, dict[int, float | None]]:
    """rate → seed → validation accuracy of the finished runs of ``label`` on ``task``; ``with_diverged``: and
    None for each run that diverged (what the stability rule reads)."""
    want = point(label, 0.0, {}, 0)  # the label's method, prompt length, rank and options
    out: dict[float, dict[int, float | None]] = {}
    for row in table.to_dict(orient="records"):
        if (row["task_name"] != task or any(row[k] != want[k] for k in ("method", "prompt_len", "rank", "options"))
                or _train_options(row) != _train_options(want)):
            continue
        if row.get("status") == "ok":
            out.setdefault(row["lr"], {})[int(row["seed"])] = row["validation_accuracy"]
        elif with_diverged and diverged(row):
            out.setdefault(row["lr"], {})[int(row["seed"])] = None
    return out


def accuracy(table, label: str, task: str) -> dict[float, list[float]]:
    """rate → validation accuracies of the finished runs of ``label`` on ``task`` (seeds in order). A rate at which
    some seed diverged has no accuracy to average: it is left out (``diverged_seeds`` counts them)."""
    return _held(accuracy_by_seed(table, label, task, with_diverged=True))


def diverged_seeds(table, label: str, task: str) -> dict[float, tuple[int, int]]:
    """rate → (seeds that diverged, seeds run) of ``label`` on ``task``, for the rates where some seed diverged."""
    return _fell(accuracy_by_seed(table, label, task, with_diverged=True))


def _held(by_seed: dict) -> dict[float, list[float]]:
    return {lr: [seeds[s] for s in sorted(seeds)] for lr, seeds in by_seed.items() if None not in seeds.values()}


def _fell(by_seed: dict) -> dict[float, tuple[int, int]]:
    return {lr: (sum(v is None for v in seeds.values()), len(seeds)) for lr, seeds in by_seed.items()
            if None in seeds.values()}


def grid_choice(table, label: str, tasks: list[str]) -> dict:
    """The rate ``label``'s grid recommends: item 5's rule once every rate has two seeds on every task.

    The rule: per rate and seed, the validation accuracy averaged over the tasks; ``stable_choice`` then takes the
    best mean over the seeds among the rates with a stability margin. Until every rate of the grid has seeds 0 and 1
    on every task, the grid keeps its earlier choice (each task's seeds averaged, then the best mean over the tasks,
    over the rates every task has), and says which runs the rule still needs. Only rates run on every task count.
    Returns {"lr", "by", "refused", "missing": rate → the seeds it lacks on some task}."""
    by_task = {task: accuracy_by_seed(table, label, task, with_diverged=True) for task in tasks}
    every = sorted(set.intersection(*(set(v) for v in by_task.values()))) if by_task else []  # run on every task
    missing = {lr: [s for s in (0, 1) if any(s not in v[lr] for v in by_task.values())] for lr in every}
    missing = {lr: seeds for lr, seeds in missing.items() if seeds}
    if every and not missing:
        by_rate = {lr: [None if any(v[lr][s] is None for v in by_task.values()) else  # a seed diverged on a task
                        sum(v[lr][s] for v in by_task.values()) / len(tasks)
                        for s in sorted(set.intersection(*(set(v[lr]) for v in by_task.values())))] for lr in every}
        choice = stable_choice(by_rate)
        return {"lr": choice["lr"], "by": "stability margin", "refused": choice["refused"], "missing": {}}
    per_task = {task: {lr: sum(seeds.values()) / len(seeds) for lr, seeds in v.items() if None not in seeds.values()}
                for task, v in by_task.items()}
    both = mean_over_tasks(per_task) if every else {}
    return {"lr": max(both, key=both.get) if both else None,
            "by": f"best mean (the stability rule waits for seed 1 at {len(missing)} rate(s))",
            "refused": {}, "missing": missing}


def recorded_runs():
    """The committed record of the grid as a table (one row per finished run, and per run that diverged)."""
    import pandas as pd

    runs = read_json(RECORD)["runs"] if RECORD.is_file() else []
    return pd.DataFrame([{"rank": 0, "options": {}, **run["status"]["params"], "status": run["status"]["status"],
                          "error": run["status"].get("error"),
                          "validation_accuracy": run["metrics"].get("validation_accuracy")} for run in runs])


def tuned_rates(task: str, labels: list[str] | None = None, table=None) -> dict[str, dict]:
    """Per method label: the rate of the grid with the best validation accuracy on ``task`` (seeds averaged), read
    from the committed record (or ``table``, a ``recorded_runs()`` already read), with that accuracy, the seeds
    behind it and whether it sits at the grid's edge (then the grid is not finished there). Labels with no finished
    run on ``task`` are left out."""
    table = recorded_runs() if table is None else table
    out = {}
    for label in labels or list(GRIDS):
        by_seed = accuracy_by_seed(table, label, task, with_diverged=True) if len(table) else {}
        acc = _held(by_seed)
        if not acc:
            continue
        means = {lr: sum(v) / len(v) for lr, v in acc.items()}
        best = max(means, key=means.get)
        out[label] = {"lr": best, "validation_accuracy": means[best], "seeds": len(acc[best]),
                      "at_edge": best in (min(means), max(means)), "grid": dict(sorted(means.items())),
                      "runs": {lr: len(v) for lr, v in sorted(acc.items())},
                      "diverged": _fell(by_seed)}
    return out


def recommended_rate(label: str, tasks: tuple[str, ...] = ("yesno", "sst2"), table=None,
                     decided: bool = False) -> float:
    """The recommended rate of ``label`` from the committed record (``grid_choice``; ``table``: the record already
    read by ``recorded_runs()``, for a caller that asks about several labels). ``decided``: refuse a grid recorded
    part-way (runs the stability rule still waits for), whose best mean so far is not yet the rule's choice."""
    table = recorded_runs() if table is None else table
    found = {task: tuned_rates(task, [label], table).get(label) for task in tasks}
    missing = [task for task, row in found.items() if row is None]
    if missing:
        raise ValueError(f"no finished grid run of {label!r} on {', '.join(missing)} in {RECORD}: run "
                         f"`python benchmarks/lr_grid.py --only {label}` first")
    choice = grid_choice(table, label, list(tasks))
    if decided and choice["missing"]:
        raise ValueError(f"the grid of {label!r} is part-way (the rule waits for seed 1 at {len(choice['missing'])} "
                         f"rate(s)): run `python benchmarks/lr_grid.py --only {label}` to its end first")
    return choice["lr"]


def mean_over_tasks(per_task: dict[str, dict[float, float]]) -> dict[float, float]:
    """rate → validation accuracy averaged over the tasks, for the rates that every task has."""
    common = set.intersection(*(set(v) for v in per_task.values()))
    return {lr: sum(v[lr] for v in per_task.values()) / len(per_task) for lr in common}


def demo_rates_record(profile: dict) -> str:
    """The record of the demo's rates for a profile (its ``to_dict()``), at its budget, batch and method options
    (``results/NAME.json``): e.g. ``demo_rates_60_steps``, ``demo_rates_60_steps_batch_4`` at another batch than
    the profiles' default, ``demo_rates_60_steps_residual`` when the profile trains LoPT's residual form (an option
    set to False names no form: ``--no-residual`` is the plain record)."""
    options = sorted({key for opts in profile.get("method_options", {}).values() for key, value in opts.items()
                      if value is not False})
    batch = profile.get("batch_size", Profile.batch_size)
    return (f"demo_rates_{profile['steps']}_steps" + (f"_batch_{batch}" if batch != Profile.batch_size else "")
            + "".join(f"_{key}" for key in options))


def profile_settings(profile: dict) -> dict:
    """A profile's settings other than its rates and decays: what makes two recorded runs comparable (each run
    records the rate and the weight decay it trained with). Tuples as lists: as a JSON record holds them."""
    profile = {"method_options": {}, **profile}  # records from before profiles had method options: none
    return {k: list(v) if isinstance(v, tuple) else v for k, v in profile.items()
            if k not in ("learning_rates", "weight_decays")}


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


def trained_decay(name: str, P, backbone, options: dict) -> float:
    """The weight decay ``name`` (built with ``options``) trains with under profile ``P``: the profile's, else the
    method's recommended one, which the trainer takes when the config names none (the demo's scripts drop recorded
    runs made with another)."""
    from lopt_core.methods import build_method

    given = P.train_config(0, method=name).weight_decay
    if given is not None:
        return given
    return build_method(name, backbone, prompt_len=20, **P.options(name, **options)).recommended_weight_decay
