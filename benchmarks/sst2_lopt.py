"""LoPT on real SST-2: prompt tuning vs LoPT-1/LoPT-2 at r ∈ {2, 4} and the LoPTs' default forms, 3 seeds, validation
selects, test reports.

    python benchmarks/sst2_lopt.py [--out ../runs/sst2_lopt] [--data ../../shared/data/sst2] [--steps 240]

Embedded backbone, batch 8, n = 20, each method at its best learning rate on SST-2's validation in the grid of
``benchmarks/lr_grid.py`` (read from the committed ``results/lr_grid_runs.json``; LoPT at r = 4 takes the rate its
family found at r = 2, the only rank of the grid). The rows are labels of the grid: ``lopt1`` and ``lopt2`` the paper's
forms, ``lopt1_residual_wd`` and ``lopt2_residual`` the LoPTs as the kit now builds and trains them (X = X0 + U V with
weight decay 1, X = X0 + σ(X0 U) V). Validation = dev.tsv (872 sentences; 500 of them scored every 30 steps to keep the
best checkpoint); test = test.tsv (1,821 labelled sentences), scored once per run. The runs are a resumable sweep of
the worker notebook (finished runs are skipped when this script is run again; each finished run is also recorded in
``results/sst2_lopt_runs.json``, committed, so the sweep resumes on another machine; a row whose runs are recorded
keeps their rate when the grid grows, ``--retune`` trains it again at the grid's). Then, in this process: zero-shot on
test, mean ± 95% interval per method, per-seed paired differences against prompt tuning, and, for the trained full
prompts, their effective rank and the test accuracy of their rank-r truncations. Writes
``benchmarks/results/sst2_lopt.json``."""
from __future__ import annotations

import argparse
from pathlib import Path

from lopt_core import analysis
from lopt_core.data import load_task
from lopt_core.evaluation.evaluator import evaluate
from lopt_core.lab.sweep import run_key
from lopt_core.methods import build_method, load_method
from lopt_core.model import load_backbone
from lopt_core.utils import read_json

from harness.grid import GRIDS, TRAIN_OPTIONS, built_options, tuned_rates
from harness.quality import Sweep, explicit, intervals, paired_differences
from harness.results import RESULTS, RUNS, data_option, load, save

RECORD = RESULTS / "sst2_lopt_runs.json"
ABOUT = "finished runs of benchmarks/sst2_lopt.py (validation selects, test.tsv reports)"

# (label of the learning-rate grid, rank): the grid's label names the form and its training options; "lopt1" and
# "lopt2" are the paper's X = U V and σ(X0 U) V, "lopt1_residual_wd" LoPT-1's default since the diagnosis (X0 + U V,
# weight decay 1), "lopt2_residual" LoPT-2's since its grid (X0 + σ(X0 U) V)
CONFIGS = [("prompt_tuning", 0), ("lopt1", 2), ("lopt1", 4), ("lopt2", 2), ("lopt2", 4), ("lopt1_residual_wd", 2),
           ("lopt2_residual", 2)]


def label(name: str, rank: int) -> str:
    return name if not rank else f"{name} (r={rank})"


def sweep_point(name: str, rank: int, lr: float, data: str, seed: int) -> dict:
    """The run of grid label ``name`` at ``rank``: its method, build options and training options as the grid's."""
    method, options, _ = GRIDS[name]
    opts = built_options(options)
    given = {"options": opts} if opts else {}
    given |= {"train_options": TRAIN_OPTIONS[name]} if name in TRAIN_OPTIONS else {}
    return explicit({"method": method, "prompt_len": 20, "rank": rank, "lr": lr, "task_name": "sst2",
                     "task_path": data, "eval_limit": 500, "seed": seed, **given})


def recorded_rates(data: str, seeds: list[int], retune: bool) -> dict[tuple[str, int], float]:
    """(label, rank) → the one rate at which the record has every seed's run of that row: a report keeps the runs it
    has when the grid grows (a rate a tenth of a point better is not worth retraining a row); ``retune``: none."""
    runs = [] if retune or not RECORD.is_file() else read_json(RECORD)["runs"]
    keys, lrs = {run["key"] for run in runs}, {run["status"]["params"]["lr"] for run in runs}
    out = {}
    for name, rank in CONFIGS:
        held = [lr for lr in sorted(lrs) if all(run_key(sweep_point(name, rank, lr, data, s)) in keys for s in seeds)]
        if len(held) == 1:
            out[name, rank] = held[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RUNS / "sst2_lopt"))
    data_option(parser, "sst2")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8], help="truncation ranks")
    parser.add_argument("--retune", action="store_true", help="train every row at the grid's rate now, not at the "
                                                              "rate its recorded runs have (the grid may have grown)")
    args = parser.parse_args()
    data, out = str(Path(args.data).resolve()), Path(args.out)
    rates = tuned_rates("sst2", sorted({m for m, _ in CONFIGS}))
    missing = sorted({m for m, _ in CONFIGS} - set(rates))
    if missing:
        raise SystemExit(f"no learning rate tuned on SST-2's validation for {missing}: run "
                         f"`python benchmarks/lr_grid.py --only {' '.join(missing)} --tasks sst2` first")
    for m, r in rates.items():
        print(f"{m}: lr {r['lr']:g} (validation {100 * r['validation_accuracy']:.1f}%, {r['seeds']} seed(s)"
              + (", at the grid's edge: the grid is not finished there" if r["at_edge"] else "") + ")", flush=True)
    ran = recorded_rates(data, args.seeds, args.retune)
    for (m, r), lr in ran.items():
        if lr != rates[m]["lr"]:
            print(f"{label(m, r)}: its runs are recorded at lr {lr:g}, where the grid now prefers {rates[m]['lr']:g}: "
                  "kept (--retune trains it again at the grid's rate)", flush=True)
    points = [sweep_point(m, r, ran.get((m, r), rates[m]["lr"]), data, s) for s in args.seeds for m, r in CONFIGS]
    sweep = Sweep(out, RECORD, ABOUT)
    sweep.restore()
    table = sweep.run(points, steps=args.steps)
    table["label"] = [label(m, r) for _ in args.seeds for m, r in CONFIGS]  # the table is in the points' order
    summary = intervals(table, ["label"], "test_accuracy")
    differences = paired_differences(table, "test_accuracy", baseline="prompt_tuning", by="label")
    details = {k: table.groupby("label")[k].first().to_dict() for k in ("trainable_parameters", "lr")}
    details["seconds_per_step"] = table.groupby("label")["seconds_per_step"].median().to_dict()

    backbone = load_backbone("embedded")
    task = load_task("sst2", path=data)
    zero = evaluate(build_method("zero_shot", backbone), backbone, task, "test")
    spectra = []
    before = {(r["seed"], r.get("run")): r for r in (load("sst2_lopt") or {}).get("spectra", [])}
    for s in args.seeds:  # the trained full prompts: how low rank are they, and what does cutting them cost?
        key = run_key(next(p for p in points if p["method"] == "prompt_tuning" and p["seed"] == s))
        folder = out / key
        if not (folder / "run" / "method").is_dir():  # a run restored from the record keeps its metrics only
            kept = before.get((s, key)) or before.get((s, None))  # the last report's, of this very run
            print(f"seed {s}: no trained prompt under {folder} (restored from the record): "
                  + ("the last report's spectrum of it kept" if kept else "no spectrum"))
            spectra += [{**kept, "run": key}] if kept else []
            continue
        method = load_method(folder / "run" / "method", backbone)
        values = analysis.singular_values(method.input_prompt())
        cut = {r: evaluate(analysis.truncate_method(method, r, backbone), backbone, task, "test")["accuracy"]
               for r in args.ranks}
        spectra.append({"seed": s, "run": key, "singular_values": values.tolist(),
                        "effective_rank_90": analysis.effective_rank(values),
                        "entropy_rank": analysis.entropy_effective_rank(values), "truncated_test_accuracy": cut})
    tuned = {m: {k: v for k, v in r.items() if k != "grid"} for m, r in rates.items()}
    path = save("sst2_lopt", {
        "protocol": {"train": "train.tsv (6,920)", "validation": "dev.tsv (872; 500 scored during training)",
                     "test": "test.tsv (1,821), scored once per run", "steps": args.steps, "batch_size": 8,
                     "prompt_len": 20, "seeds": args.seeds, "learning_rates": tuned,
                     "learning_rate_source": "best validation accuracy on SST-2 in benchmarks/lr_grid.py"},
        "zero_shot": zero, "summary": summary, "differences": differences, "details": details, "spectra": spectra,
        "runs": table[["label", "method", "rank", "seed", "lr", "validation_accuracy", "test_accuracy", "best_step",
                       "trainable_parameters", "seconds_per_step"]].to_dict(orient="records")}, backbone.device)
    print(f"zero-shot test accuracy {zero['accuracy']:.4f}")
    for row in summary:
        print(f"{row['label']:18s} {100 * row['mean']:.2f}% [{100 * row['low']:.2f}, {100 * row['high']:.2f}] "
              f"n={row['n']}")
    print("\n".join(d["text"] for d in differences))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
