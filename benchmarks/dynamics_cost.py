"""What recording training dynamics costs: seconds per training step with ``TrainConfig(dynamics=True)`` against
``dynamics=False``, the same method and batch, the two trainers stepped in alternating rounds in one process.

    python benchmarks/dynamics_cost.py [--rounds 8]

The target (DESIGN.md §9) is at most 3% of a step: on by default only if it holds. Writes
benchmarks/results/dynamics_cost.json.
"""
from __future__ import annotations

from lopt_core import TrainConfig, Trainer, build_method, load_task

from harness.results import save
from harness.timing import embedded_backbone, side_by_side, timing_parser

METHODS = {"prompt_tuning": {"prompt_len": 20}, "lopt2": {"prompt_len": 20, "rank": 2},
           "prefix_tuning": {"prompt_len": 10}}  # the prefix MLP (k = 512): the most parameters to copy


def main() -> None:
    args = timing_parser(__doc__, rounds=8).parse_args()
    backbone, task = embedded_backbone(), load_task("yesno")
    rows = {}
    for name, options in METHODS.items():
        trainers = {on: Trainer(build_method(name, backbone, **options), backbone, task,
                                TrainConfig(steps=10_000, dynamics=on, progress=False)) for on in (True, False)}
        timed = side_by_side({"on": trainers[True].train_step, "off": trainers[False].train_step}, args.rounds)
        ratio = timed["on"]["median"] / timed["off"]["median"]
        rows[name] = {"seconds_on": timed["on"], "seconds_off": timed["off"], "ratio": ratio}
        print(f"{name:14s} step {timed['off']['median']:.3f} s without, {timed['on']['median']:.3f} s with "
              f"dynamics: ×{ratio:.3f}")
    path = save("dynamics_cost", {"rounds": args.rounds, "methods": rows,
                                  "worst_ratio": max(r["ratio"] for r in rows.values())})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
