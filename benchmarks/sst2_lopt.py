"""LoPT's claim on real SST-2: accuracy of prompt tuning vs LoPT-1/LoPT-2 at ~5-10x fewer parameters.

    python benchmarks/sst2_lopt.py [--data ../shared/data/sst2] [--seeds 0 1 2] [--steps 120]

Embedded backbone, profile ``cpu`` settings (batch 8, AdamW at each method's recommended lr),
train on SST-2 train (batches drawn from all 6,920 sentences), model selection on 200 dev
sentences, final score on the full dev set (872). Writes ``benchmarks/results/sst2_lopt.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lopt_core.backbone import load_backbone
from lopt_core.methods import build_method
from lopt_core.profiles import get_profile
from lopt_core.tasks import load_task
from lopt_core.train import TrainConfig, Trainer, evaluate
from lopt_core.utils import run_info, write_json

HERE = Path(__file__).resolve().parent
METHODS = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="default: the cpu profile's steps")
    parser.add_argument("--prompt-len", type=int, default=20)
    parser.add_argument("--out", default=str(HERE / "results" / "sst2_lopt.json"))
    parser.add_argument("--append", action="store_true", help="add these seeds' runs to an existing --out file")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    profile = get_profile("cpu", steps=args.steps)
    backbone = load_backbone(profile.backbone)
    task = load_task("sst2", path=args.data)
    started = time.time()
    if args.append and Path(args.out).is_file():
        zero = json.loads(Path(args.out).read_text())["zero_shot"]
    else:
        zero = evaluate(build_method("zero_shot", backbone), backbone, task, "dev")
    print(f"zero-shot dev accuracy {zero['accuracy']:.4f}", flush=True)
    runs = []
    if args.append and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text())
        runs = [r for r in previous["runs"] if r["seed"] not in args.seeds or r["method"] not in args.methods]
    for seed in args.seeds:
        for name in args.methods:
            options = METHODS[name]
            method = build_method(name, backbone, prompt_len=args.prompt_len, seed=seed, **options)
            config = TrainConfig(steps=profile.steps, batch_size=profile.batch_size, eval_every=profile.eval_every,
                                 eval_limit=200, seed=seed, progress=False)
            trainer = Trainer(method, backbone, task, config)
            trainer.task.splits.pop("test", None)  # the final score is on the full dev set
            result = trainer.fit()
            dev = result.metrics["dev"]
            runs.append({"method": name, "seed": seed, "dev_accuracy": dev["accuracy"],
                         "dev_macro_f1": dev["macro_f1"], "trainable_parameters": method.trainable_parameters(),
                         "best_step": result.metrics["best_step"],
                         "seconds_per_step": result.metrics["seconds_per_step"]})
            print(runs[-1], flush=True)
    table = {}
    for name in sorted({r["method"] for r in runs}, key=list(METHODS).index):
        accs = [r["dev_accuracy"] for r in runs if r["method"] == name]
        table[name] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                       "trainable_parameters": next(r["trainable_parameters"] for r in runs if r["method"] == name)}
    table["zero_shot"] = {"mean": zero["accuracy"], "std": 0.0, "trainable_parameters": 0}
    write_json(args.out, {"benchmark": "sst2_lopt", "profile": profile.to_dict(), "prompt_len": args.prompt_len,
                          "data": args.data, "dev_size": zero["n"], "zero_shot": zero, "runs": runs,
                          "summary": table, "wall_seconds": time.time() - started,
                          "run_info": run_info(None, backbone.device), "threads": torch.get_num_threads()})
    print(f"{'method':15s} {'dev acc (mean ± std)':>22s} {'trainable':>10s}")
    for name, row in table.items():
        print(f"{name:15s} {row['mean']:>14.4f} ± {row['std']:.4f} {row['trainable_parameters']:>10,}")


if __name__ == "__main__":
    main()
