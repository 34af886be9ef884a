"""Serving: per-request latency with cached prompt K/V, and mixed-task batches, against PEFT.

    python benchmarks/serving.py [--rounds 20] [--tasks 8] [--new-tokens 32]

1. Latency of one classification request (batch 1): the kit's ``Server`` with a 20-token soft
   prompt whose K/V were computed once, the bare backbone on the same text, and PEFT PromptTuning
   (which runs the 20 virtual tokens again for every request).
2. Mixed-task batches: 8 requests for 8 different tasks in one batch. The kit: 8 trained prompts
   (prompt tuning n = 20) served from their cached K/V in one forward pass; PEFT: LoRA r = 8 with 8
   adapters and per-row ``adapter_names``. Requests/s for classification and decode tokens/s for
   greedy generation. Writes benchmarks/results/serving.json.
"""
from __future__ import annotations

import copy
import time

import torch

from lopt_core.data import load_task
from lopt_core.methods import build_method
from lopt_core.serving.server import Server

from harness.results import save
from harness.timing import embedded_backbone, side_by_side, timing_parser

TEXT = "Review: the acting was wooden and the plot made no sense at all, but the music was lovely.\nSentiment:"


def peft_prompt_model(backbone, virtual: int):
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(backbone.model), PromptTuningConfig(task_type="CAUSAL_LM",
                                                                             num_virtual_tokens=virtual))
    return model.eval()


def peft_lora_multi(backbone, adapters: int):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(backbone.model)
    config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)  # non-zero B: adapters that change outputs, as trained ones
    model = get_peft_model(base, config, adapter_name="task0")
    for i in range(1, adapters):
        model.add_adapter(f"task{i}", config)
    return model.eval()


def main() -> None:
    parser = timing_parser(__doc__, rounds=20)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--virtual", type=int, default=20)
    args = parser.parse_args()
    backbone = embedded_backbone()
    task = load_task("sentiment")
    tok = backbone.tokenizer

    # 1. single-request latency
    server = Server(backbone)
    server.add("prompt", build_method("prompt_tuning", backbone, prompt_len=args.virtual), task)
    server.add("bare", build_method("zero_shot", backbone), task)
    peft_pt = peft_prompt_model(backbone, args.virtual)
    ids = tok(TEXT, return_tensors="pt")
    label_ids = torch.tensor([s[0] for s in task.verbalizer(tok).token_ids])

    def peft_request():
        with torch.inference_mode():
            peft_pt(**ids).logits[0, -1, label_ids].softmax(-1)

    latency = side_by_side({"kit_cached_prompt": lambda: server.classify([("prompt", TEXT)]),
                            "bare_backbone": lambda: server.classify([("bare", TEXT)]),
                            "peft_prompt_tuning": peft_request}, rounds=args.rounds, warmup=2)
    latency["ratio_cached_vs_bare"] = latency["kit_cached_prompt"]["median"] / latency["bare_backbone"]["median"]
    latency["ratio_peft_vs_bare"] = latency["peft_prompt_tuning"]["median"] / latency["bare_backbone"]["median"]

    # 2. mixed-task batches
    mixed = Server(backbone)
    for i in range(args.tasks):
        mixed.add(f"task{i}", build_method("prompt_tuning", backbone, prompt_len=args.virtual, seed=i,
                                           init="random"), task)
    rows = task.examples("validation", args.tasks)
    requests = [(f"task{i}", task.prompt(r)) for i, r in enumerate(rows)]
    lora = peft_lora_multi(backbone, args.tasks)
    names = [f"task{i}" for i in range(args.tasks)]
    enc_right = tok([t for _, t in requests], return_tensors="pt", padding=True)
    enc_left = tok([t for _, t in requests], return_tensors="pt", padding=True, padding_side="left")

    def lora_classify():
        with torch.inference_mode():
            return lora(**enc_right, adapter_names=names).logits

    def lora_generate():
        with torch.inference_mode():
            lora.generate(**enc_left, adapter_names=names, max_new_tokens=args.new_tokens,
                          min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)

    def kit_generate():
        mixed.generate(requests, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, banned=())

    rounds = max(3, args.rounds // 4)
    cls = side_by_side({"kit_mixed_prompts": lambda: mixed.classify(requests),
                        "peft_lora_multi_adapter": lora_classify}, rounds=rounds)
    start = time.perf_counter()
    gen = side_by_side({"kit_mixed_prompts": kit_generate, "peft_lora_multi_adapter": lora_generate}, rounds=3)
    mixed_results = {
        "classify_requests_per_second": {k: args.tasks / s["median"] for k, s in cls.items()},
        "generate_decode_tokens_per_second": {k: args.tasks * args.new_tokens / s["median"] for k, s in gen.items()},
        "classify_seconds": cls, "generate_seconds": gen, "generate_wall": time.perf_counter() - start,
    }
    path = save("serving", {"config": vars(args), "latency": latency, "mixed": mixed_results}, backbone.device)
    print("single request latency (median s):")
    for k in ("kit_cached_prompt", "bare_backbone", "peft_prompt_tuning"):
        print(f"  {k:22s} {latency[k]['median'] * 1000:8.1f} ms")
    print(f"  cached prompt / bare = {latency['ratio_cached_vs_bare']:.3f}; "
          f"PEFT / bare = {latency['ratio_peft_vs_bare']:.3f}")
    print(f"mixed-task batch of {args.tasks}:")
    for k in ("kit_mixed_prompts", "peft_lora_multi_adapter"):
        print(f"  {k:24s} {mixed_results['classify_requests_per_second'][k]:7.1f} requests/s, "
              f"{mixed_results['generate_decode_tokens_per_second'][k]:7.1f} decode tokens/s")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
