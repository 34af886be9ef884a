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
                # resident size of a fresh process holding only this method, at the peak of its steps
                mem = res[ours].get("memory", {}).get("resident_at_peak_mb")
                mem_t = res[theirs].get("memory", {}).get("resident_at_peak_mb")
                a, b = res[ours]["median"], res[theirs]["median"]
                rows.append((f"train step: {ours} vs {theirs}", f"{a:.2f} s vs {b:.2f} s", f"{b / a:.2f}x",
                             f"peak RSS {mem:.0f} vs {mem_t:.0f} MB" if mem and mem_t else ""))
        print(f"# measured {r['date']} on {r['run_info']['processor']}, {r['threads']} threads")
    if (r := load("efficiency")):
        for name, e in r["results"].items():
            peak = f"{e['fraction_of_matmul_peak']:.0%} of the {r['matmul_peak_gflops']:.0f} GFLOP/s matmul peak"
            what = ("iapt's no-grad half (prefill + generators)" if name == "iapt_prompts_only"
                    else f"a {name} step")
            rows.append((f"FLOP/s of {what}", f"{e['achieved_gflops']:.1f} GFLOP/s", peak,
                         f"{e['seconds_per_step']:.2f} s"))
    if (r := load("small_batch_matmul")):
        res, mb = r["results"], r["weight_megabytes"]
        for key in ("forward", "backward"):
            a = res[f"aten_{key}"]
            rows.append((f"{r['config']['rows']}-row matmuls through all {mb:.0f} MB of weights, {key}",
                         f"{a['median'] * 1e3:.1f} ms ({a['gb_per_second']:.1f} GB/s)",
                         f"{res['read']['median'] / a['median']:.0%} of the memory bandwidth",
                         f"reading them once: {res['read']['median'] * 1e3:.1f} ms"))
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
    if (r := load("compile")):
        for name, c in r["runs"].items():
            even = f"pays back after {c['break_even_steps']:.0f} steps" if c["break_even_steps"] else "no gain"
            rows.append((f"torch.compile: {name} step, eager vs compiled",
                         f"{c['eager']['median']:.2f} s vs {c['compiled']['median']:.2f} s", f"{c['speedup']:.2f}x",
                         f"compile {c['compile_seconds']:.0f} s once; {even}"))
    print("| measurement | value | ratio | note |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    quality()


def table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    print(f"\n{title}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


def quality() -> None:
    """The accuracy/quality reports: SST-2 (LoPT), E2E (prefix-tuning), IAPT."""
    if (r := load("sst2_lopt")):
        steps = r["profile"]["steps"]
        rows = [(name, f"{v['mean']:.2%} ± {v['std']:.2%}", v["seeds"], f"{v['trainable_parameters']:,}")
                for name, v in r["summary"].items()]
        table(f"SST-2, full dev set ({r['dev_size']} sentences), n = {r['prompt_len']}, r = 2, {steps} steps",
              ("method", "dev accuracy (mean ± std over seeds)", "seeds", "trainable parameters"), rows)
        ranks = sorted({int(k) for s in r["spectra"] for k in s["truncated_accuracy"]})
        lopt1 = {r_["rank"]: r_["dev_accuracy"] for r_ in r["runs"] if r_["method"] == "lopt1" and r_["seed"] == 0}
        rows = []
        for k in ranks:
            trunc = [s["truncated_accuracy"][str(k)] for s in r["spectra"]]
            rows.append((k, f"{sum(trunc) / len(trunc):.2%} ({len(trunc)} seeds)",
                         f"{lopt1[k]:.2%}" if k in lopt1 else "-"))
        eff = ", ".join(str(s["effective_rank_90"]) for s in r["spectra"])
        table(f"Learned n = {r['prompt_len']} prompts: effective rank (90% energy) per seed {eff}",
              ("rank r", "full prompt truncated to r", "LoPT-1 trained at r (seed 0)"), rows)
    if (r := load("e2e_prefix")):
        rows = [(name, f"{v['bleu']:.1f}", f"{v['rouge_l']:.1f}", f"{v['trainable_parameters']:,}",
                 f"{v['stored_parameters']:,}", f"{v['seconds_per_step']:.2f}" if v["seconds_per_step"] else "-")
                for name, v in r["results"].items()]
        table(f"E2E: trained on devset.csv, first {r['test_mrs']} test MRs with all references, "
              f"{r['profile']['steps']} steps, greedy",
              ("method", "BLEU", "ROUGE-L", "trainable", "stored", "s/step"), rows)
    if (r := load("iapt_report")):
        fmt = lambda x: "-" if x is None else f"{x:.2f}"
        rows = [(v["method"], v["budget"], fmt(v["exact_match"]), fmt(v["rouge_l_free"]),
                 f"{v['trainable_parameters']:,}", f"{v['seconds_per_step']:.2f}") for v in r["mixture"]]
        steps, dev_rows = r["profile"]["steps"], r["config"]["eval_rows"]
        table(f"IAPT on the built-in instruction mixture, {steps} steps, {dev_rows} dev rows "
              "(exact match on closed answers, ROUGE-L on free text)",
              ("method", "budget", "exact match", "ROUGE-L", "trainable", "s/step"), rows)
        if r.get("sst2"):
            rows = [(v["method"], f"{v['dev_accuracy']:.2%}", f"{v['trainable_parameters']:,}",
                     f"{v['seconds_per_step']:.2f}") for v in r["sst2"]]
            table(f"SST-2 phrased as an instruction (full dev set), {steps} steps",
                  ("method", "dev accuracy", "trainable", "s/step"), rows)
        if r.get("ablations"):
            rows = [(v["method"], fmt(v["exact_match"]), fmt(v["rouge_l_free"])) for v in r["ablations"]]
            table(f"IAPT ablations (m = 32, instruction mixture, {steps} steps)",
                  ("variant", "exact match", "ROUGE-L"), rows)
        if r.get("decode"):
            d = r["decode"]
            table("Greedy decode, 8 prompts × 32 new tokens", ("model", "tokens/s"),
                  [(k, f"{v['tokens_per_second']:.1f}") for k, v in d.items()])


if __name__ == "__main__":
    main()
