"""Print one table from benchmarks/results/*.json (the README shows its output)."""
from __future__ import annotations

import json

from common import RESULTS


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    rows = []
    if (r := load("train_step")):
        res = r["results"]
        for ours, theirs in (("prompt_tuning", "peft_prompt_tuning"), ("lopt1", "peft_prompt_tuning"),
                             ("lopt2", "peft_prompt_tuning"), ("prefix_tuning", "peft_prefix_tuning"),
                             ("iapt", "peft_lora_r8")):
            if ours in res and theirs in res:
                mem = res[ours].get("memory", {}).get("step_peak_mb")
                mem_t = res[theirs].get("memory", {}).get("step_peak_mb")
                a, b = res[ours]["median"], res[theirs]["median"]
                rows.append((f"train step: {ours} vs {theirs}", f"{a:.2f} s vs {b:.2f} s", f"{b / a:.2f}x",
                             f"step memory {mem:.0f} vs {mem_t:.0f} MB" if mem and mem_t else ""))
        print(f"# measured {r['date']} on {r['run_info']['processor']}, {r['threads']} threads")
    if (r := load("efficiency")):
        for name, e in r["results"].items():
            peak = f"{e['fraction_of_matmul_peak']:.0%} of the {r['matmul_peak_gflops']:.0f} GFLOP/s matmul peak"
            rows.append((f"FLOP/s of a {name} step", f"{e['achieved_gflops']:.1f} GFLOP/s", peak, ""))
    if (r := load("serving")):
        lat = r["latency"]
        ms = (lat["kit_cached_prompt"]["median"] * 1e3, lat["bare_backbone"]["median"] * 1e3)
        rows.append(("request latency: cached prompt vs bare backbone", f"{ms[0]:.1f} ms vs {ms[1]:.1f} ms",
                     f"{lat['ratio_cached_vs_bare']:.3f}x", f"PEFT PromptTuning {lat['ratio_peft_vs_bare']:.3f}x"))
        m = r["mixed"]
        k, p = "kit_mixed_prompts", "peft_lora_multi_adapter"
        for key, label in (("classify_requests_per_second", "classify requests/s"),
                           ("generate_decode_tokens_per_second", "decode tokens/s")):
            ours, theirs = m[key][k], m[key][p]
            rows.append((f"mixed-task batch (8 tasks): {label}", f"{ours:.1f} vs {theirs:.1f}",
                         f"{ours / theirs:.2f}x", "vs PEFT LoRA, 8 adapters"))
    if (r := load("notebook_series")):
        rows.append((f"notebook series, profile {r['profile']}", f"{r['total_seconds'] / 60:.1f} min",
                     f"{len(r['runs'])} notebooks", ""))
    print("| measurement | value | ratio | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
