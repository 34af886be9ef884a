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
import copy
import json
import warnings
from pathlib import Path

import torch

from lopt_core.data import Task
from lopt_core.evaluation.scoring import loss_and_scores
from lopt_core.methods import build_method
from lopt_core.model import load_backbone

from common import alternate, child_peak_memory, peak_rss_mb, save, step_memory_mb, summary, word_batch

OURS = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}, "prefix_tuning": {}, "iapt": {}}
PEFT = ("peft_prompt_tuning", "peft_prefix_tuning", "peft_lora_r8")


def make_batch(backbone, batch: int, length: int):
    task = Task("bench", "classification", "{text}", {}, label_words=(" negative", " positive"))
    ids = word_batch(backbone, batch, length)
    labels = torch.arange(batch) % 2
    ours = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "prompt_mask": torch.ones_like(ids),
            "labels": labels}
    label_ids = torch.tensor([s[0] for s in task.verbalizer(backbone.tokenizer).token_ids])
    peft_labels = torch.full_like(ids, -100)
    peft_ids = ids.clone()
    peft_ids[:, -1] = label_ids[labels]  # the label word is the last token, predicted from the one before
    peft_labels[:, -1] = label_ids[labels]
    return task, ours, {"input_ids": peft_ids, "attention_mask": torch.ones_like(ids), "labels": peft_labels}


def our_method(name: str, backbone, virtual: int):
    """The kit's method ``name`` as every benchmark step builds it (IAPT: m = 32; others: ``virtual`` tokens)."""
    options = dict(OURS[name])
    if name == "iapt":
        options["bottleneck"] = 32
    else:
        options["prompt_len"] = virtual
    return build_method(name, backbone, **options)


def our_step(name: str, backbone, task, batch, virtual: int):
    method = our_method(name, backbone, virtual)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def step():
        loss, _ = loss_and_scores(method, backbone, batch, task)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step, method.trainable_parameters()


def peft_model(name: str, backbone, virtual: int):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    base = copy.deepcopy(backbone.model)  # PEFT wraps (LoRA even edits) the model: keep ours clean
    if name == "peft_prompt_tuning":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual)
    elif name == "peft_prefix_tuning":
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual, prefix_projection=True,
                                    encoder_hidden_size=512)
    else:
        config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config)
    model.train()
    return model


def peft_step(name: str, backbone, batch, virtual: int):
    model = peft_model(name, backbone, virtual)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_steps(backbone, args, names):
    task, ours, theirs = make_batch(backbone, args.batch, args.length)
    steps, params = {}, {}
    for name in names:
        if name in OURS:
            steps[name], params[name] = our_step(name, backbone, task, ours, args.virtual)
        else:
            steps[name], params[name] = peft_step(name, backbone, theirs, args.virtual)
    return steps, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--virtual", type=int, default=20)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    backbone = load_backbone("embedded", device="cpu")
    if args.memory_child:  # child process: one method only, memory of its training steps
        steps, _ = build_steps(backbone, args, [args.memory_child])
        steps[args.memory_child]()  # warm-up: allocator pools and optimizer state exist from here on
        print(json.dumps({**step_memory_mb(steps[args.memory_child]), "ru_maxrss_mb": peak_rss_mb()}))
        return
    names = list(OURS) + list(PEFT)
    steps, params = build_steps(backbone, args, names)
    times = alternate(steps, rounds=args.rounds)
    tokens = args.batch * args.length
    results = {}
    for name in names:
        s = summary(times[name])
        results[name] = {**s, "tokens_per_second": tokens / s["median"], "trainable_parameters": params[name]}
    if not args.skip_memory:
        for name in names:
            results[name]["memory"] = child_peak_memory(Path(__file__).resolve(), name,
                                                        ["--batch", str(args.batch), "--length", str(args.length),
                                                         "--virtual", str(args.virtual)])
    pairs = {"prompt_tuning": "peft_prompt_tuning", "lopt1": "peft_prompt_tuning", "lopt2": "peft_prompt_tuning",
             "prefix_tuning": "peft_prefix_tuning", "iapt": "peft_lora_r8"}
    for ours, theirs in pairs.items():
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
