"""Print one table from benchmarks/results/*.json (docs/results.md shows its output)."""
from __future__ import annotations

from lopt_core.evaluation.stats import Interval
from lopt_core.lab.notebooks import newest_runtimes, read_runtimes

from harness.results import load
from harness.steps import PAIRS


def main() -> None:
    rows = []
    if (r := load("train_step")):
        res = r["results"]
        for ours, theirs in PAIRS.items():
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
    if (r := load("time_to_accuracy")):
        kit, peft = r["median"]["kit"], r["median"]["peft"]
        eff = r["padding_efficiency"]
        rows.append((f"time to {r['config']['target']:.0%} validation accuracy on SST-2 (median of "
                     f"{len(r['config']['seeds'])} seeds)", f"{kit['seconds']:.0f} s vs {peft['seconds']:.0f} s",
                     f"{r['ratio']:.2f}x", f"vs PEFT PromptTuning; steps {kit['steps']:.0f} vs {peft['steps']:.0f}, "
                     f"s/step {kit['seconds_per_step']:.2f} vs {peft['seconds_per_step']:.2f}; padding efficiency "
                     + " vs ".join(f"{v:.1%}" for v in eff.values())))
    for profile, lessons in newest_runtimes(read_runtimes()).items():
        rows.append((f"lessons, profile {profile}", f"{sum(r['seconds'] for r in lessons.values()) / 60:.1f} min",
                     f"{len(lessons)} lessons", "one after the other (benchmarks/results/notebook_times.json)"))
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


def interval(row: dict, scale: float = 100.0, unit: str = "%") -> str:
    """A saved interval row (mean, low, high, n) as ``Interval.format`` writes it, with its number of seeds."""
    n = row.get("n", 1)
    text = Interval(row["mean"], row.get("low"), row.get("high"), n).format(scale, 1, unit, "range")
    return text if n < 2 else f"{text} (n = {n})"  # one seed: format already says so


def quality() -> None:
    """The quality reports under the protocol (validation selects, test reports, mean and 95% interval over
    seeds): SST-2 (LoPT), E2E (prefix-tuning), IAPT, and the demo's learning rates. A result file without a
    ``protocol`` (chosen and reported on the same rows) is not shown: re-run its script."""
    for name in ("sst2_lopt", "e2e_prefix", "iapt_report"):
        r = load(name)
        if r is not None and "protocol" not in r:
            print(f"\n{name}.json predates the protocol (selected and reported on the same rows): its quality "
                  f"numbers are not shown; re-run benchmarks/{name}.py")
    if (r := load("sst2_lopt")) and "protocol" in r:
        p = r["protocol"]
        rows = [(row["label"], interval(row), f"{r['details']['trainable_parameters'][row['label']]:,}",
                 f"{r['details']['lr'][row['label']]:g}") for row in r["summary"]]
        rows.append(("zero-shot", f"{100 * r['zero_shot']['accuracy']:.1f}%", "0", "-"))
        table(f"SST-2 test accuracy ({p['test']}), n = {p['prompt_len']}, {p['steps']} steps, seeds {p['seeds']}",
              ("method", "test accuracy, mean [95% CI]", "trainable parameters", "lr"), rows)
        print("\n" + "\n".join(d["text"] for d in r["differences"]))
    if (r := load("e2e_prefix")) and "protocol" in r:
        bleu = {row["method"]: row for row in r["summary"]["test_bleu"]}
        rouge = {row["method"]: row for row in r["summary"]["test_rouge_l"]}
        rows = [(m, interval(bleu[m], 1, ""), interval(rouge[m], 1, ""), f"{r['details']['stored_parameters'][m]:,}")
                for m in bleu]
        table(f"E2E test ({r['protocol']['test']}), {r['protocol']['steps']} steps, seeds {r['protocol']['seeds']}",
              ("method", "BLEU [95% CI]", "ROUGE-L [95% CI]", "stored parameters"), rows)
        print("\n" + r["difference"]["text"])
    if (r := load("iapt_report")) and "protocol" in r:
        rouge = {row["label"]: row for row in r["mixture"]["test_rouge_l_free"]}
        table(f"IAPT mixture, test ({r['protocol']['test']}), seeds {r['protocol']['seeds']}",
              ("budget", "method", "exact match, closed answers [95% CI]", "ROUGE-L, free text [95% CI]",
               "trainable parameters"),
              [(row["budget"], row["label"], interval(row), interval(rouge[row["label"]], 1, ""),
                f"{r['details']['trainable_parameters'][row['label']]:,}") for row in r["mixture"]["test_exact_match"]])
        print("\n" + "\n".join(d["text"] for d in r["differences"]))
    if (r := load("iapt_report")) and r.get("decode"):  # a speed measurement: valid under any protocol
        table("Greedy decode, 8 prompts × 32 new tokens", ("model", "tokens/s"),
              [(k, f"{v['tokens_per_second']:.1f}") for k, v in r["decode"].items()])
    if (r := load("demo_rates")):
        def accuracy(v):  # None: the run diverged
            return "diverged" if v["validation_accuracy"] is None else f"{v['validation_accuracy']:.1%}"

        rows = [(m, "  ".join(f"{float(lr):g}: {accuracy(v)}" for lr, v in res["by_rate"].items()),
                 "none holds" if res["best_lr"] is None else f"{res['best_lr']:g}") for m, res in r["results"].items()]
        table("The demo profile's learning rates (validation accuracy after 60 steps, mean over seeds; a rate whose "
              "next one up diverged or fell > 10 points is refused; test never scored)",
              ("method", "validation accuracy by rate", "chosen"), rows)


if __name__ == "__main__":
    main()
