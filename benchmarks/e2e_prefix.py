"""Prefix-tuning's claim on real E2E: prefix-tuning (n=10, MLP) > embedding-only prompt tuning (n=10).

    python benchmarks/e2e_prefix.py [--data ../shared/data/e2e] [--steps 120] [--test-mrs 100]

The official E2E training file is not available here: train on ``devset.csv`` (547 MRs, 4,672
references), evaluate on the first ``--test-mrs`` MRs of ``testset_w_refs.csv`` with all their
references (corpus BLEU, ROUGE-L). Embedded backbone, profile ``cpu`` settings. Writes
``benchmarks/results/e2e_prefix.json``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lopt_core.backbone import load_backbone
from lopt_core.generation import evaluate_generation
from lopt_core.methods import build_method
from lopt_core.profiles import get_profile
from lopt_core.tasks import load_task
from lopt_core.train import TrainConfig, Trainer
from lopt_core.utils import run_info, write_json

HERE = Path(__file__).resolve().parent
METHODS = {"zero_shot": {}, "prompt_tuning": {"prompt_len": 10}, "prefix_tuning": {"prompt_len": 10}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "e2e"))
    parser.add_argument("--steps", type=int, default=None, help="default: the cpu profile's steps")
    parser.add_argument("--test-mrs", type=int, default=100)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results" / "e2e_prefix.json"))
    args = parser.parse_args()
    profile = get_profile("cpu", steps=args.steps)
    backbone = load_backbone(profile.backbone)
    task = load_task("e2e", path=args.data, splits={"train": "devset.csv", "test": "testset_w_refs.csv"})
    results, started = {}, time.time()
    for name, options in METHODS.items():
        method = build_method(name, backbone, seed=args.seed, **options)
        step_time = None
        if method.trainable_parameters():
            config = TrainConfig(steps=profile.steps, batch_size=profile.batch_size, eval_every=profile.steps,
                                 eval_split="test", eval_limit=32, final_eval_limit=32, seed=args.seed,
                                 progress=False)
            fit = Trainer(method, backbone, task, config).fit()
            step_time = fit.metrics["seconds_per_step"]
        start = time.time()
        scores = evaluate_generation(method, backbone, task, "test", limit=args.test_mrs, num_beams=args.num_beams)
        results[name] = {"bleu": scores["bleu"], "rouge_l": scores["rouge_l"],
                         "trainable_parameters": method.trainable_parameters(),
                         "stored_parameters": method.stored_parameters(), "seconds_per_step": step_time,
                         "generation_seconds": time.time() - start, "samples": scores["samples"][:3]}
        print(name, {k: v for k, v in results[name].items() if k != "samples"}, flush=True)
    write_json(args.out, {"benchmark": "e2e_prefix", "profile": profile.to_dict(), "data": args.data,
                          "train_file": "devset.csv", "test_mrs": args.test_mrs, "num_beams": args.num_beams,
                          "results": results, "wall_seconds": time.time() - started,
                          "run_info": run_info(args.seed, backbone.device)})
    print(f"{'method':15s} {'BLEU':>6s} {'ROUGE-L':>8s} {'trainable':>10s} {'stored':>8s} {'s/step':>7s}")
    for name, r in results.items():
        step = f"{r['seconds_per_step']:.2f}" if r["seconds_per_step"] else "-"
        print(f"{name:15s} {r['bleu']:6.2f} {r['rouge_l']:8.2f} {r['trainable_parameters']:>10,} "
              f"{r['stored_parameters']:>8,} {step:>7s}")


if __name__ == "__main__":
    main()
