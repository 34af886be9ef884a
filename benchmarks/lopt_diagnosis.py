"""Why LoPT lags on yes/no: capacity, start or optimisation? Every run at the grid's budget (120 steps, batch 8,
profile ``cpu``), n = 20, validation selects, test reports. Three parts share one run folder and one record:

- ``capacity``: LoPT-1 at r ∈ {1, 2, 4, 8, 20} beside prompt tuning, every method at 3e-3 (both methods'
  recommended rate). At r = n = 20 LoPT-1 can express every prompt prompt tuning can and starts from the same
  prompt (the SVD of the vocabulary start is exact), so a gap left there is the factorisation's optimisation.
- ``start``: LoPT-1 r = 2 started from the rank-2 SVD of the *trained* prompt-tuning prompt of the same seed
  (``init="saved"``; the capacity part's prompt-tuning run must exist with its ``run/method`` folder) and trained
  on. If it reaches prompt tuning, a rank-2 prompt that works exists and the start is the problem; if not, rank 2
  lacks the capacity.
- ``fixes``: today's LoPT-1 r = 2 and LoPT-2 r = 2 against each fix, same seeds: per-factor rates (LoRA+, η_V =
  λ·η_U), the Riemannian-preconditioned step (``precondition=δ``), a balanced start at embedding scale, a longer
  warmup, and for LoPT-2 a σ without dead units (tanh, GELU); and the residual form X = X0 + U V (``residual``: the
  start's embeddings stay, frozen, and the rank-r factors train a change of them, the low rank on the update), for
  LoPT-1 and for LoPT-2 (each LoPT's default since).

    python benchmarks/lopt_diagnosis.py [--parts capacity start fixes] [--tasks yesno sst2] [--seeds 0 1 2]

A resumable sweep of the worker notebook: finished runs are skipped, and recorded in
``results/lopt_diagnosis_runs.json`` (committed) so the sweep resumes on another machine. Prints each part's table
of test accuracy with 95% intervals over the seeds run and the paired differences against its baseline; writes
``results/lopt_diagnosis.json``. Each run keeps its dynamics in its folder's history.csv
(``lopt-kit dynamics FOLDER/run``).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
import torch

from lopt_core.evaluation.spectrum import cumulative_energy, entropy_effective_rank, singular_values
from lopt_core.lab.profiles import get_profile
from lopt_core.lab.sweep import run_key
from lopt_core.methods import build_method, load_method
from lopt_core.utils import read_json, seed_everything

from harness.quality import Sweep, explicit, intervals, paired_differences
from harness.results import RESULTS, RUNS, SHARED_DATA, load, save

RECORD = RESULTS / "lopt_diagnosis_runs.json"
ABOUT = "finished runs of benchmarks/lopt_diagnosis.py (validation selects, test reports)"
RANKS = (1, 2, 4, 8, 20)
LR = 3e-3  # prompt tuning's and LoPT-1's recommended rate (benchmarks/lr_grid.py)
LOPT2_LR = 1e-2  # LoPT-2's
PARTS = ("capacity", "start", "fixes")


def task_fields(task: str) -> dict:
    data = {"task_name": task}
    if task == "sst2":  # real SST-2: dev.tsv selects (500 rows scored during training), test.tsv reports
        data.update(task_path=str((SHARED_DATA / "sst2").resolve()), eval_limit=500)
    return data


def prompt_tuning_point(task: str, seed: int) -> dict:
    return {"method": "prompt_tuning", "prompt_len": 20, "rank": 0, "lr": LR, "seed": seed, **task_fields(task)}


def lopt_point(task: str, seed: int, rank: int = 2, method: str = "lopt1", lr: float = LR, **extra) -> dict:
    """A LoPT row: the plain form unless its options say residual (the rows compare fixes with the plain U V)."""
    return explicit({"method": method, "prompt_len": 20, "rank": rank, "lr": lr, "seed": seed, **task_fields(task),
                     **extra})


def capacity(task: str, seed: int, ranks: list[int]) -> list[tuple[str, dict]]:
    return [("prompt_tuning", prompt_tuning_point(task, seed))] + [
        (f"lopt1 (r={r})", lopt_point(task, seed, r)) for r in ranks]


def start(task: str, seed: int, out: Path) -> list[tuple[str, dict]]:
    trained = out / run_key(prompt_tuning_point(task, seed)) / "run"
    warm = {"options": {"init": "saved", "init_path": str(trained)}}
    return [("prompt_tuning", prompt_tuning_point(task, seed)), ("lopt1 (r=2)", lopt_point(task, seed)),
            ("lopt1 (r=2) from trained PT", lopt_point(task, seed, **warm))]


def fixes(task: str, seed: int) -> list[tuple[str, dict]]:
    lopt2 = {"method": "lopt2", "lr": LOPT2_LR}
    return [
        ("lopt1 (r=2)", lopt_point(task, seed)),
        ("lopt1 residual (X0 + U V)", lopt_point(task, seed, options={"residual": True})),
        # U = 0: a step of the rate moves X0 + U V about six times less than prompt tuning's (relative to X)
        ("lopt1 residual at 1e-2", lopt_point(task, seed, lr=1e-2, options={"residual": True})),
        ("lopt1 residual at 3e-2", lopt_point(task, seed, lr=3e-2, options={"residual": True})),
        # LoPT-1's default since the grid chose it (lopt1_residual_wd): the decay bounds the change U V
        ("lopt1 residual + decay 1 at 3e-2 (the default)", lopt_point(task, seed, lr=3e-2, options={"residual": True},
                                                                     train_options={"weight_decay": 1.0})),
        ("lopt1 + precondition 1e-2", lopt_point(task, seed, train_options={"precondition": 1e-2})),
        ("lopt1 + embedding-scale start", lopt_point(task, seed, options={"start_scale": "embedding"})),
        ("lopt1 + lr_ratio 4", lopt_point(task, seed, options={"lr_ratio": 4.0})),
        ("lopt1 + lr_ratio 0.25", lopt_point(task, seed, options={"lr_ratio": 0.25})),
        ("lopt1 + U 4x faster (1.2e-2, λ 0.25)", lopt_point(task, seed, lr=4 * LR, options={"lr_ratio": 0.25})),
        ("lopt2 (r=2)", lopt_point(task, seed, **lopt2)),
        ("lopt2 + tanh", lopt_point(task, seed, **lopt2, options={"activation": "tanh"})),
        ("lopt2 + gelu", lopt_point(task, seed, **lopt2, options={"activation": "gelu"})),
        ("lopt1 + lr_ratio 16", lopt_point(task, seed, options={"lr_ratio": 16.0})),
        ("lopt1 + warmup 0.3", lopt_point(task, seed, train_options={"warmup": 0.3})),
        # LoPT-2's default since its grid (lopt2_residual): X0 + σ(X0 U) V, V = 0 at the start, at the rule's rate
        ("lopt2 residual at 1e-2 (the default)", lopt_point(task, seed, method="lopt2", lr=LOPT2_LR,
                                                            options={"residual": True})),
    ]


def baseline(part: str, label: str) -> str:
    if part == "fixes":
        return "lopt2 (r=2)" if label.startswith("lopt2") else "lopt1 (r=2)"
    return "prompt_tuning"


def retrain_if_restored(sweep: Sweep, point: dict) -> None:
    """The start part needs the trained prompt itself: a run restored from the record holds only its metrics."""
    folder = sweep.out / run_key(point)
    if (folder / "status.json").is_file() and not (folder / "run" / "method").is_dir():
        print(f"{folder.name}: restored from the record without its prompt; training it again", flush=True)
        shutil.rmtree(folder)


def spectra(task: str, seed: int, out: Path, backbone) -> dict:
    """Is what prompt tuning learned low-rank? The spectra of its trained prompt X and of its change from the start
    ΔX = X − X_start (the start rebuilt from the seed, checked against the drift the run recorded at the step it
    kept): entropy effective rank, the energy share of the top 1, 2, 4, 8 directions, and the relative error of the
    best rank-2 approximation (of X: what a rank-2 warm start keeps)."""
    run = out / run_key(prompt_tuning_point(task, seed)) / "run"
    trained = load_method(run / "method", backbone).input_prompt().detach().float().cpu()
    seed_everything(seed)
    start = build_method("prompt_tuning", backbone, prompt_len=20, seed=seed).input_prompt().detach().float()
    drift = float((trained - start).norm() / start.norm())
    history, best = pd.read_csv(run / "history.csv"), read_json(run / "metrics.json")["best_step"]
    recorded = float(history.loc[history["step"] == best, "prompt_drift"].iloc[0])  # the kept prompt is the best step's
    if abs(drift - recorded) > 1e-3 * max(recorded, 1.0):
        raise RuntimeError(f"the rebuilt start is not the run's: drift {drift:.4f}, recorded {recorded:.4f}")
    result = {"task": task, "seed": seed, "drift": drift}
    for name, M in (("X", trained), ("delta", trained - start), ("X_start", start)):
        s = singular_values(M)
        energy = cumulative_energy(s)
        result[name] = {"norm": float(M.norm()), "entropy_rank": float(entropy_effective_rank(s)),
                        "energy": {r: float(energy[r - 1]) for r in (1, 2, 4, 8)},
                        "rank2_error": float(torch.sqrt(1 - energy[1]))}
    X, D = result["X"], result["delta"]
    print(f"{task} seed {seed}: trained prompt entropy rank {X['entropy_rank']:.1f}, rank 2 keeps "
          f"{100 * X['energy'][2]:.0f}% of its energy; its change from the start (drift {drift:.3f}): entropy rank "
          f"{D['entropy_rank']:.1f}, rank 2 holds {100 * D['energy'][2]:.0f}%", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RUNS / "lopt_diagnosis"))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--tasks", nargs="+", default=["yesno", "sst2"], choices=["yesno", "sst2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ranks", type=int, nargs="+", default=list(RANKS))
    parser.add_argument("--rows", nargs="+", metavar="TEXT",
                        help="only the rows whose label holds one of these texts (e.g. 'residual at 3e-2'), with their "
                             "baselines")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: summarise the runs of each part that are finished (recorded or on disk)")
    args = parser.parse_args()
    sweep = Sweep(Path(args.out).resolve(), RECORD, ABOUT)
    sweep.restore()
    before = load("lopt_diagnosis") or {}  # the parts not run this time stay as they were
    report = {"lr": LR, "lopt2_lr": LOPT2_LR, "steps": 120, **{part: before[part] for part in PARTS if part in before}}
    # a part run again keeps its earlier rows that this invocation does not train (``with_earlier``)
    for part in args.parts:
        labelled = []  # seed-major, task by task: a stopped sweep leaves every configuration with the same seeds
        for seed in args.seeds:
            for task in args.tasks:
                if part == "start":
                    retrain_if_restored(sweep, prompt_tuning_point(task, seed))
                labelled += (capacity(task, seed, args.ranks) if part == "capacity" else
                             start(task, seed, sweep.out) if part == "start" else fixes(task, seed))
        if args.rows:  # the rows named, and the baselines they are compared with
            keep = {label for label, _ in labelled if any(text in label for text in args.rows)}
            keep |= {baseline(part, label) for label in keep}
            labelled = [(label, point) for label, point in labelled if label in keep]
        if args.finished_only:
            labelled = [(label, point) for label, point in labelled
                        if (sweep.out / run_key(point) / "status.json").is_file()]
        table = sweep.run([point for _, point in labelled], steps=120)
        table["label"], table["task"] = [label for label, _ in labelled], table["task_name"]
        report[part] = summarise(part, with_earlier(table, before.get(part, {}).get("runs", [])))
        if part == "start":
            backbone = get_profile("cpu").load_backbone()
            report[part]["spectra"] = [spectra(task, seed, sweep.out, backbone)
                                       for seed in args.seeds for task in args.tasks]
    path = save("lopt_diagnosis", report)
    print(f"written to {path}")


def with_earlier(table: pd.DataFrame, earlier: list[dict]) -> pd.DataFrame:
    """This run's rows and the part's earlier ones that it did not run again (other tasks, other ``--rows``): a part's
    report grows row by row instead of shrinking to the rows of its last invocation."""
    done = set(zip(table["task"], table["label"], table["seed"], strict=True))
    kept = [r for r in earlier if (r["task"], r["label"], r["seed"]) not in done]
    return pd.concat([table, pd.DataFrame(kept)], ignore_index=True) if kept else table


def summarise(part: str, table: pd.DataFrame) -> dict:
    """Print and return one part's table: test accuracy per (task, label), paired differences from the baseline."""
    summary = intervals(table, ["task", "label"], "test_accuracy")
    differences = []
    for task, rows in table.groupby("task"):
        for base in sorted({baseline(part, label) for label in rows["label"]}):
            part_rows = rows[[baseline(part, label) == base or label == base for label in rows["label"]]]
            if (part_rows["label"] != base).any():
                differences += [{"task": task, **d} for d in
                                paired_differences(part_rows, "test_accuracy", baseline=base, by="label")]
    print(f"\n{part}: test accuracy, mean [95% interval] over seeds")
    for row in summary:
        print(f"{row['task']:6s} {row['label']:32s} {100 * row['mean']:.1f}% [{100 * row['low']:.1f}, "
              f"{100 * row['high']:.1f}] n={row['n']}")
    print("\n".join(f"{d['task']}: {d['text']}" for d in differences))
    columns = ["task", "label", "seed", "validation_accuracy", "test_accuracy", "best_step", "loss_first",
               "loss_last"]
    return {"summary": summary, "differences": differences,
            "runs": table[[c for c in columns if c in table]].to_dict(orient="records")}


if __name__ == "__main__":
    main()
