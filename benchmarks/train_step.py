"""Training-step throughput and peak memory: the kit's methods against PEFT on the same backbone.

    python benchmarks/train_step.py [--rounds 5] [--batch 8] [--length 64] [--virtual 20]

Same frozen backbone (the embedded SmolLM2-135M), same batch (8 × 64 word tokens, one label word
each), same number of virtual tokens (20), AdamW. The kit scores only the label logits at the answer
position; PEFT runs its usual causal-LM forward with labels only on the answer token (its logits are
computed for every position). Steps are interleaved in one process after a warm-up; peak memory is
measured in a fresh child process per method. Writes benchmarks/results/train_step.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.results import save
from harness.steps import OURS, PAIRS, PEFT, build_steps
from harness.timing import (
    child_peak_memory,
    embedded_backbone,
    peak_rss_mb,
    side_by_side,
    step_memory_mb,
    timing_parser,
)


def main() -> None:
    parser = timing_parser(__doc__, rounds=5, batch=True)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    backbone = embedded_backbone()
    if args.memory_child:  # child process: one method only, memory of its training steps
        steps, _ = build_steps(backbone, args, [args.memory_child])
        steps[args.memory_child]()  # warm-up: allocator pools and optimizer state exist from here on
        print(json.dumps({**step_memory_mb(steps[args.memory_child]), "ru_maxrss_mb": peak_rss_mb()}))
        return
    names = list(OURS) + list(PEFT)
    steps, params = build_steps(backbone, args, names)
    times = side_by_side(steps, rounds=args.rounds)
    tokens = args.batch * args.length
    results = {}
    for name in names:
        s = times[name]
        results[name] = {**s, "tokens_per_second": tokens / s["median"], "trainable_parameters": params[name]}
    if not args.skip_memory:
        for name in names:
            results[name]["memory"] = child_peak_memory(Path(__file__).resolve(), name,
                                                        ["--batch", str(args.batch), "--length", str(args.length),
                                                         "--virtual", str(args.virtual)])
    for ours, theirs in PAIRS.items():
        results[ours]["speedup_vs"] = {theirs: results[theirs]["median"] / results[ours]["median"]}
    path = save("train_step", {"config": vars(args), "results": results}, backbone.device)
    print(f"{'method':22s} {'s/step':>8s} {'tokens/s':>9s} {'params':>11s} {'peak MB':>8s}  speed-up")
    for name, r in results.items():
        peak = r.get("memory", {}).get("resident_at_peak_mb", float("nan"))  # the figure summary.py reports
        ratio = ", ".join(f"{v:.2f}x vs {k}" for k, v in r.get("speedup_vs", {}).items())
        print(f"{name:22s} {r['median']:8.3f} {r['tokens_per_second']:9.0f} {r['trainable_parameters']:>11,} "
              f"{peak:8.0f}  {ratio}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
