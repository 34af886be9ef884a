"""This machine's training step, to scale the demo's time to another machine: ``python benchmarks/demo_speed.py``

A machine is described by its seconds per training step of **batch 8** (prompt tuning, n = 20, on the demo's task:
what a notebook's ``seconds_per_step`` reads at batch 8; a reader reported 1.9 s on theirs). The ``demo`` profile
trains at another batch, so its notebooks' step times are of that batch: this script times both batches in one
process, alternating rounds (the median step of each round), and prints their ratio. A demo step time × the ratio is
the machine's batch-8 step during that run, and the notebooks' wall time scales about as 1.9 s over it.
Writes ``benchmarks/results/demo_speed.json``. About 2 min on 2 cores.
"""
from __future__ import annotations

import argparse
import statistics

from lopt_core.lab.profiles import get_profile
from lopt_core.methods import build_method
from lopt_core.training.trainer import Trainer

from harness.results import save

YARDSTICK = 8  # the batch a machine's step time is quoted at


def step_seconds(P, backbone, task, batch_size: int, steps: int) -> float:
    """The median seconds per step of a prompt-tuning run of ``steps`` steps at ``batch_size`` (no evaluation)."""
    method = build_method("prompt_tuning", backbone, prompt_len=20, seed=0)
    config = P.train_config(0, method="prompt_tuning", steps=steps, batch_size=batch_size, eval_every=steps + 1,
                            eval_split="none", test_split=None, progress=False)
    return Trainer(method, backbone, task, config).fit().metrics["seconds_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="steps per run (the median step is kept)")
    args = parser.parse_args()
    P = get_profile("demo")
    backbone, task = P.load_backbone(), P.load_task()
    batches = sorted({YARDSTICK, P.batch_size})
    rounds = {b: [] for b in batches}
    for _ in range(args.rounds):
        for b in batches:
            rounds[b].append(step_seconds(P, backbone, task, b, args.steps))
    median = {b: statistics.median(v) for b, v in rounds.items()}
    ratio = median[YARDSTICK] / median[P.batch_size]
    for b in batches:
        print(f"batch {b}: {median[b]:.3f} s per step (rounds: {', '.join(f'{s:.3f}' for s in rounds[b])})")
    print(f"a step of batch {YARDSTICK} takes {ratio:.2f} times a step of the demo's batch ({P.batch_size})")
    path = save("demo_speed", {"config": {"method": "prompt_tuning", "prompt_len": 20, "task": P.task,
                                          "steps": args.steps, "rounds": args.rounds},
                               "seconds_per_step": {str(b): rounds[b] for b in batches},
                               "median": {str(b): median[b] for b in batches}, "ratio": ratio})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
