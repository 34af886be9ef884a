"""Hardware efficiency: FLOPs of one training step (counted by torch.utils.flop_counter) divided by
its time, as a fraction of this machine's dense fp32 matmul throughput (2048² products), measured in
the same run, interleaved with the steps; both are medians over the rounds.

One extra row, ``iapt_prompts_only``, is the first half of IAPT's step on its own: the no-grad prefill
of the instruction and the 30 generators, without the response pass and its backward. The IAPT step is
this plus a forward and backward pass of the one-token response; the row shows what each half costs.

    python benchmarks/efficiency.py [--rounds 9]

Writes benchmarks/results/efficiency.json.
"""
from __future__ import annotations

import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from harness.results import save
from harness.steps import build_steps, make_batch, our_method
from harness.timing import embedded_backbone, matmul_peak_gflops, side_by_side, timing_parser


def _cpu_attention_flop(query, key, value, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs) -> int:
    # A causal kernel skips the masked half of the scores; count what it computes.
    return sdpa_flop_count(query, key, value) // (2 if is_causal else 1)


def _cpu_attention_backward_flop(grad_out, query, key, value, out, logsumexp, dropout_p=0.0, is_causal=False,
                                 *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value) // (2 if is_causal else 1)


# torch's FlopCounterMode knows the CUDA attention kernels but not the CPU one, which then counts 0 FLOPs.
CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flop,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flop}


def iapt_prompts_only(backbone, args):
    """IAPT's instruction prefill and generators, no grad: the part of its step that has no backward."""
    _, batch, _ = make_batch(backbone, args.batch, args.length)
    method = our_method("iapt", backbone, args.virtual)

    def step():
        with torch.no_grad():
            method.prompts(backbone, method.split(backbone, batch))
    return step


def main() -> None:
    args = timing_parser(__doc__, rounds=9, batch=True).parse_args()
    backbone = embedded_backbone()
    names = ["prompt_tuning", "lopt2", "prefix_tuning", "iapt", "peft_prompt_tuning"]
    steps, _ = build_steps(backbone, args, names)
    steps["iapt_prompts_only"] = iapt_prompts_only(backbone, args)
    names.insert(names.index("iapt") + 1, "iapt_prompts_only")
    flops = {}
    for name, step in steps.items():
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
            step()
        flops[name] = counter.get_total_flops()
    # The peak is one more contestant in the interleaved rounds: this shared machine's speed drifts
    # by 10-20% within minutes, and the median peak then sees the same drift as the median step.
    peaks: list[float] = []
    steps["matmul_peak"] = lambda: peaks.append(matmul_peak_gflops())
    times = side_by_side(steps, rounds=args.rounds)
    del times["matmul_peak"]
    peaks = peaks[-args.rounds:]  # the warm-up call excluded
    peak = statistics.median(peaks)
    results = {}
    for name in names:
        t = times[name]["median"]
        achieved = flops[name] / t / 1e9
        results[name] = {"gflop_per_step": flops[name] / 1e9, "seconds_per_step": t, "achieved_gflops": achieved,
                         "fraction_of_matmul_peak": achieved / peak, "runs": times[name]["runs"]}
    path = save("efficiency", {"config": vars(args), "matmul_peak_gflops": peak,
                               "matmul_peak_runs": peaks, "results": results},
                backbone.device)
    print(f"fp32 matmul peak (2048², {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    for name, r in results.items():
        print(f"{name:20s} {r['gflop_per_step']:7.1f} GFLOP/step {r['seconds_per_step']:6.2f} s "
              f"{r['achieved_gflops']:6.1f} GFLOP/s = {r['fraction_of_matmul_peak']:.0%} of peak")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
