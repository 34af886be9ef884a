"""LoPT on real SST-2: prompt tuning vs LoPT-1/LoPT-2, plus the spectra of the learned prompts.

    python benchmarks/sst2_lopt.py [--data ../shared/data/sst2] [--seeds 0 1 2] [--steps 120]

Embedded backbone, profile ``cpu`` settings (batch 8, AdamW at each method's recommended lr).
Training batches are drawn from all 6,920 training sentences; model selection uses 200 dev
sentences; every score below is on the full dev set (872 sentences).

For every seed: prompt tuning (n = 20), LoPT-1 (r = 2) and LoPT-2 (r = 2). For the trained full
prompts: effective rank (90% energy) and entropy rank, and the accuracy of their post-hoc rank-r
truncations. For seed 0 also LoPT-1 trained at each truncation rank. Writes
``benchmarks/results/sst2_lopt.json``; ``--append`` adds seeds to an existing file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lopt_core import analysis
from lopt_core.backbone import load_backbone
from lopt_core.methods import build_method
from lopt_core.profiles import get_profile
from lopt_core.tasks import load_task
from lopt_core.train import TrainConfig, Trainer, evaluate
from lopt_core.utils import run_info, write_json

HERE = Path(__file__).resolve().parent
METHODS = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}}


def train(backbone, task, profile, name, seed, prompt_len, **options):
    method = build_method(name, backbone, prompt_len=prompt_len, seed=seed, **options)
    config = TrainConfig(steps=profile.steps, batch_size=profile.batch_size, eval_every=profile.eval_every,
                         eval_limit=200, seed=seed, progress=False)
    result = Trainer(method, backbone, task, config).fit()
    return method, {"method": name, "seed": seed, **options, "dev_accuracy": result.metrics["dev"]["accuracy"],
                    "dev_macro_f1": result.metrics["dev"]["macro_f1"],
                    "trainable_parameters": method.trainable_parameters(), "best_step": result.metrics["best_step"],
                    "seconds_per_step": result.metrics["seconds_per_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="default: the cpu profile's steps")
    parser.add_argument("--prompt-len", type=int, default=20)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", default=str(HERE / "results" / "sst2_lopt.json"))
    parser.add_argument("--append", action="store_true", help="add these seeds' runs to an existing --out file")
    args = parser.parse_args()
    profile = get_profile("cpu", steps=args.steps)
    backbone = load_backbone(profile.backbone)
    task = load_task("sst2", path=args.data)
    task.splits.pop("test", None)  # every score is on the full dev set
    started = time.time()
    previous = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).is_file() else None
    zero = previous["zero_shot"] if previous else evaluate(build_method("zero_shot", backbone), backbone, task, "dev")
    print(f"zero-shot dev accuracy {zero['accuracy']:.4f}", flush=True)
    runs = [r for r in previous["runs"] if r["seed"] not in args.seeds] if previous else []
    spectra = [s for s in previous["spectra"] if s["seed"] not in args.seeds] if previous else []
    for seed in args.seeds:
        for name, options in METHODS.items():
            method, record = train(backbone, task, profile, name, seed, args.prompt_len, **options)
            runs.append(record)
            print(record, flush=True)
            if name != "prompt_tuning":
                continue
            s = analysis.singular_values(method.prompt_matrix())
            truncated = {r: evaluate(analysis.truncate_method(method, r, backbone), backbone, task, "dev")["accuracy"]
                         for r in args.ranks}
            spectra.append({"seed": seed, "singular_values": s.tolist(),
                            "effective_rank_90": analysis.effective_rank(s),
                            "entropy_rank": analysis.entropy_effective_rank(s), "truncated_accuracy": truncated})
            print(spectra[-1]["effective_rank_90"], truncated, flush=True)
        if seed == 0:
            for r in args.ranks:
                if r != METHODS["lopt1"]["rank"]:
                    _, record = train(backbone, task, profile, "lopt1", seed, args.prompt_len, rank=r)
                    runs.append(record)
                    print(record, flush=True)
    summary = {}
    for name in METHODS:
        accs = [r["dev_accuracy"] for r in runs if r["method"] == name and r.get("rank", 2) == 2]
        summary[name] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "seeds": len(accs),
                         "trainable_parameters": next(r["trainable_parameters"] for r in runs if r["method"] == name)}
    summary["zero_shot"] = {"mean": zero["accuracy"], "std": 0.0, "seeds": 1, "trainable_parameters": 0}
    write_json(args.out, {"benchmark": "sst2_lopt", "profile": profile.to_dict(), "prompt_len": args.prompt_len,
                          "data": args.data, "dev_size": zero["n"], "zero_shot": zero, "runs": runs,
                          "spectra": spectra, "summary": summary, "wall_seconds": time.time() - started,
                          "run_info": run_info(None, backbone.device), "threads": torch.get_num_threads()})
    print(f"{'method':15s} {'dev acc (mean ± std)':>22s} {'seeds':>5s} {'trainable':>10s}")
    for name, row in summary.items():
        print(f"{name:15s} {row['mean']:>14.4f} ± {row['std']:.4f} {row['seeds']:>5d} "
              f"{row['trainable_parameters']:>10,}")
    for s in spectra:
        print(f"seed {s['seed']}: effective rank (90%) {s['effective_rank_90']}, entropy rank {s['entropy_rank']:.1f}, "
              f"truncated accuracy {s['truncated_accuracy']}")
    lopt1 = {r["rank"]: r["dev_accuracy"] for r in runs if r["method"] == "lopt1" and r["seed"] == 0}
    print(f"LoPT-1 trained at rank r (seed 0): {dict(sorted(lopt1.items()))}")


if __name__ == "__main__":
    main()
