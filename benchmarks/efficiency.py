"""Hardware efficiency: FLOPs of one training step (counted by torch.utils.flop_counter) divided by
its time, as a fraction of this machine's dense fp32 matmul throughput measured in the same run.

    python benchmarks/efficiency.py [--rounds 5]

Writes benchmarks/results/efficiency.json.
"""
from __future__ import annotations

import argparse
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import alternate, matmul_peak_gflops, save, summary
from train_step import build_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--virtual", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from lopt_core.backbone import load_backbone

    backbone = load_backbone("embedded", device="cpu")
    names = ["prompt_tuning", "lopt2", "prefix_tuning", "iapt", "peft_prompt_tuning"]
    steps, _ = build_steps(backbone, args, names)
    flops = {}
    for name, step in steps.items():
        with FlopCounterMode(display=False) as counter:
            step()
        flops[name] = counter.get_total_flops()
    peak_before = matmul_peak_gflops()
    times = alternate(steps, rounds=args.rounds)
    peak = max(peak_before, matmul_peak_gflops())
    results = {}
    for name in names:
        t = summary(times[name])["median"]
        achieved = flops[name] / t / 1e9
        results[name] = {"gflop_per_step": flops[name] / 1e9, "seconds_per_step": t, "achieved_gflops": achieved,
                         "fraction_of_matmul_peak": achieved / peak}
    path = save("efficiency", {"config": vars(args), "matmul_peak_gflops": peak, "results": results},
                backbone.device)
    print(f"fp32 matmul peak (2048², {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    for name, r in results.items():
        print(f"{name:20s} {r['gflop_per_step']:7.1f} GFLOP/step {r['seconds_per_step']:6.2f} s "
              f"{r['achieved_gflops']:6.1f} GFLOP/s = {r['fraction_of_matmul_peak']:.0%} of peak")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
