"""Does ``torch.compile`` pay off for a training step on this machine? Eager vs compiled, side by side.

    python benchmarks/compile.py [--rounds 5] [--methods prompt_tuning lopt2] [--mode default]

The decoder stack (``backbone.transformer``) is compiled with inductor; the method, the scoring of
the label logits and AdamW are the step train_step.py times (`harness.steps.our_step`), on the same batch (8 × 64 word
tokens + 20 virtual tokens). The first compiled call (tracing + code generation) is timed apart and
reported as the one-off compile cost, with the number of steps it takes for the gain to pay it back.
The kit uses ``torch.compile`` only if this shows a gain. Writes benchmarks/results/compile.json.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from lopt_core.model import Backbone

from harness.results import save
from harness.steps import make_batch, our_step
from harness.timing import embedded_backbone, side_by_side, timing_parser


def compiled_backbone(backbone: Backbone, mode: str) -> Backbone:
    """The same backbone whose ``transformer`` is the compiled decoder stack (weights shared)."""
    compiled = torch.compile(backbone.model.base_model, mode=None if mode == "default" else mode, dynamic=False)

    class Compiled(Backbone):
        @property
        def transformer(self):
            return compiled

    return Compiled(**{f.name: getattr(backbone, f.name) for f in dataclasses.fields(backbone)})


def main() -> None:
    parser = timing_parser(__doc__, rounds=5, batch=True)
    parser.add_argument("--methods", nargs="+", default=["prompt_tuning", "lopt2"])
    parser.add_argument("--mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    args = parser.parse_args()
    backbone = embedded_backbone()
    task, batch, _ = make_batch(backbone, args.batch, args.length)
    fast = compiled_backbone(backbone, args.mode)
    steps, compile_seconds, first_losses = {}, {}, {}
    for name in args.methods:
        steps[name] = our_step(name, backbone, task, batch, args.virtual)[0]
        compiled = our_step(name, fast, task, batch, args.virtual)[0]
        start = time.perf_counter()
        first_losses[name] = (float(steps[name]()), float(compiled()))  # same init, same batch: the losses must agree
        compile_seconds[name] = time.perf_counter() - start
        steps[f"{name}+compile"] = compiled
        print(f"{name}: first compiled step (with compilation) {compile_seconds[name]:.1f} s; "
              f"first losses eager {first_losses[name][0]:.5f} compiled {first_losses[name][1]:.5f}", flush=True)
    times = side_by_side(steps, rounds=args.rounds)
    runs = {}
    for name in args.methods:
        eager, comp = times[name], times[f"{name}+compile"]
        gain = eager["median"] - comp["median"]
        runs[name] = {"eager": eager, "compiled": comp, "speedup": eager["median"] / comp["median"],
                      "compile_seconds": compile_seconds[name],
                      "first_loss_eager": first_losses[name][0], "first_loss_compiled": first_losses[name][1],
                      "break_even_steps": compile_seconds[name] / gain if gain > 0 else None}
        print(f"{name:15s} eager {eager['median']:.3f} s/step  compiled {comp['median']:.3f} s/step  "
              f"speedup {runs[name]['speedup']:.2f}x  compile {compile_seconds[name]:.0f} s  "
              f"break-even {runs[name]['break_even_steps'] or float('inf'):.0f} steps", flush=True)
    path = save("compile", {"config": vars(args), "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
