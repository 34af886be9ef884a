"""Prefix-tuning's claim on real E2E: prefix-tuning (n=10, MLP) > embedding-only prompt tuning (n=10).

    python benchmarks/e2e_prefix.py [--out ../runs/e2e_prefix] [--data ../../shared/data/e2e] [--seeds 0 1 2]

The official E2E training file is not available here: train on ``devset.csv`` (547 meaning
representations), of which a seeded 10% of the MRs (with all their references) is carved off as the
validation split that keeps the best checkpoint (lowest target loss); the first ``--test-mrs`` MRs of
``testset_w_refs.csv`` are decoded once per run (greedy, newlines banned) and scored against all their
references (corpus BLEU, ROUGE-L). Embedded backbone, profile ``cpu`` (120 steps, batch 8), 3 seeds, a
resumable sweep of the worker notebook. Writes ``benchmarks/results/e2e_prefix.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lopt_core import evaluate_generation
from lopt_core.data import load_task
from lopt_core.evaluation.stats import paired_difference
from lopt_core.methods import build_method
from lopt_core.model import load_backbone

from harness.quality import Sweep, intervals
from harness.results import RUNS, data_option, save

SPLITS = {"train": "devset.csv", "test": "testset_w_refs.csv"}
CONFIGS = {"prompt_tuning": {}, "prefix_tuning": {}}  # n = 10 both; the prefix trains through its k = 512 MLP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(RUNS / "e2e_prefix"))
    data_option(parser, "e2e")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-mrs", type=int, default=100)
    args = parser.parse_args()
    data = str(Path(args.data).resolve())
    points = [{"method": m, "prompt_len": 10, "options": o, "task_name": "e2e", "task_path": data,
               "task_splits": SPLITS, "seed": s} for s in args.seeds for m, o in CONFIGS.items()]
    table = Sweep(Path(args.out)).run(points, generate=True, test_limit=args.test_mrs, max_new_tokens=60)
    summary = {key: intervals(table, ["method"], key) for key in ("test_bleu", "test_rouge_l")}
    by = {m: dict(zip(p["seed"], p["test_bleu"], strict=True)) for m, p in table.groupby("method")}
    d = paired_difference(by["prefix_tuning"], by["prompt_tuning"])
    difference = {"mean": d.mean, "low": d.low, "high": d.high, "n": d.n,
                  "text": f"prefix_tuning − prompt_tuning: {d.format(1, 1, ' BLEU', 'range')}"}

    backbone = load_backbone("embedded")
    task = load_task("e2e", path=data, splits=SPLITS)
    zero = evaluate_generation(build_method("zero_shot", backbone), backbone, task, "test", limit=args.test_mrs)
    details = {k: table.groupby("method")[k].first().to_dict()
               for k in ("trainable_parameters", "stored_parameters", "lr")}
    details["seconds_per_step"] = table.groupby("method")["seconds_per_step"].median().to_dict()
    path = save("e2e_prefix", {
        "protocol": {"train": "devset.csv minus the carved validation", "validation": task.split_notes["validation"],
                     "test": f"the first {args.test_mrs} MRs of testset_w_refs.csv, all references, decoded once",
                     "steps": 120, "batch_size": 8, "prompt_len": 10, "seeds": args.seeds, "decoding": "greedy"},
        "zero_shot": {"bleu": zero["bleu"], "rouge_l": zero["rouge_l"]}, "summary": summary,
        "difference": difference, "details": details,
        "runs": table[["method", "seed", "lr", "validation_loss", "test_bleu", "test_rouge_l", "best_step",
                       "seconds_per_step"]].to_dict(orient="records")}, backbone.device)
    print(f"zero-shot BLEU {zero['bleu']:.1f} ROUGE-L {zero['rouge_l']:.1f}")
    for key, rows in summary.items():
        for row in rows:
            print(f"{key:12s} {row['method']:14s} {row['mean']:.2f} [{row['low']:.2f}, {row['high']:.2f}] n={row['n']}")
    print(difference["text"], f"\nwritten to {path}")


if __name__ == "__main__":
    main()
