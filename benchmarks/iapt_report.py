"""IAPT against prompt tuning and prefix-tuning: instruction mixture, SST-2 as an instruction,
ablations, and decode speed.

    python benchmarks/iapt_report.py [--steps 120] [--eval-rows 200] [--skip-ablations]

Embedded backbone, profile ``cpu`` settings. (1) The built-in instruction mixture at two budgets
(~35k and ~1.1M trainable parameters): exact match on closed answers, ROUGE-L on free text.
(2) Real SST-2 phrased as an instruction (rank classification over " negative"/" positive", full dev
set). (3) IAPT ablations: pooling (attention/mean/last) and activation (rational/GELU/ReLU).
(4) Greedy decode tokens/s of IAPT against the bare backbone (8 prompts × 32 new tokens).
Writes benchmarks/results/iapt_report.json.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from lopt_core.backbone import load_backbone
from lopt_core.generation import evaluate_generation, generate
from lopt_core.methods import build_method
from lopt_core.profiles import get_profile
from lopt_core.tasks import Task, load_task
from lopt_core.train import TrainConfig, Trainer, evaluate

from common import alternate, save, summary

HERE = Path(__file__).resolve().parent
DEFAULT_IAPT = "iapt (m=32)"  # trained in the 1.1M budget; also the "attention + rational" ablation row
BUDGETS = {
    "35k": {"iapt (m=1)": ("iapt", {"bottleneck": 1}), "prompt tuning (n=60)": ("prompt_tuning", {"prompt_len": 60}),
            "prefix, table (n=3)": ("prefix_tuning", {"prompt_len": 3, "reparam": False, "init": "text",
                                                      "init_text": "Answer:"})},
    "1.1M": {DEFAULT_IAPT: ("iapt", {"bottleneck": 32}),
             "prefix, MLP (n=10, k=92)": ("prefix_tuning", {"prompt_len": 10, "reparam_dim": 92})},
}
SST2_METHODS = {DEFAULT_IAPT: ("iapt", {"bottleneck": 32}), "prompt tuning (n=20)": ("prompt_tuning", {}),
                "prefix, MLP (n=10)": ("prefix_tuning", {"prompt_len": 10})}
ABLATIONS = {"attention + rational": {}, "mean pooling": {"pooling": "mean"}, "last-token pooling": {"pooling": "last"},
             "GELU": {"activation": "gelu"}, "ReLU": {"activation": "relu"}}


def fit(backbone, task, profile, name, options, eval_limit=200):
    method = build_method(name, backbone, **options)
    config = TrainConfig(steps=profile.steps, batch_size=profile.batch_size, eval_every=profile.eval_every,
                         eval_limit=eval_limit, final_eval_limit=eval_limit, progress=False)
    result = Trainer(method, backbone, task, config).fit()
    return method, result


def sst2_as_instruction(path: str) -> Task:
    sst2 = load_task("sst2", path=path)
    return Task("sst2_instruction", "classification",
                "Instruction: Is the sentiment of this review positive or negative?\nInput: {text}\nResponse:",
                {k: v for k, v in sst2.splits.items() if k in ("train", "dev")},
                label_words=(" negative", " positive"), label_names=("negative", "positive"), source=sst2.source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--eval-rows", type=int, default=200)
    parser.add_argument("--sst2", default=str(HERE.parent.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--skip-ablations", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    profile = get_profile("cpu", steps=args.steps)
    backbone = load_backbone(profile.backbone)
    mixture = load_task("instructions")
    out: dict = {"config": vars(args), "profile": profile.to_dict(), "mixture": [], "sst2": [], "ablations": []}
    started = time.time()

    def score(label, method, result, task, budget=None):
        g = evaluate_generation(method, backbone, task, "dev", limit=args.eval_rows, max_new_tokens=40)
        return {"method": label, "budget": budget, "trainable_parameters": method.trainable_parameters(),
                "exact_match": g.get("exact_match"), "rouge_l_free": g.get("rouge_l_free"),
                "by_task": {k: v["score"] for k, v in g["by_task"].items()},
                "seconds_per_step": result.metrics["seconds_per_step"]}

    for budget, entries in BUDGETS.items():
        for label, (name, options) in entries.items():
            method, result = fit(backbone, mixture, profile, name, options, eval_limit=32)
            out["mixture"].append(score(label, method, result, mixture, budget))
            print(out["mixture"][-1], flush=True)
            save("iapt_report", out, backbone.device)  # partial results survive an interrupted run
    if Path(args.sst2).is_dir():
        sst2 = sst2_as_instruction(args.sst2)
        for label, (name, options) in SST2_METHODS.items():
            method, result = fit(backbone, sst2, profile, name, options)
            full = evaluate(method, backbone, sst2, "dev")
            out["sst2"].append({"method": label, "trainable_parameters": method.trainable_parameters(),
                                "dev_accuracy": full["accuracy"],
                                "seconds_per_step": result.metrics["seconds_per_step"]})
            print(out["sst2"][-1], flush=True)
            save("iapt_report", out, backbone.device)
    if not args.skip_ablations:
        for label, options in ABLATIONS.items():
            if not options:  # the default IAPT (m=32) was trained above, in the 1.1M budget: same run
                default = next(r for r in out["mixture"] if r["method"] == DEFAULT_IAPT)
                out["ablations"].append({**default, "method": label, "budget": None})
                continue
            method, result = fit(backbone, mixture, profile, "iapt", {"bottleneck": 32, **options}, eval_limit=32)
            out["ablations"].append(score(label, method, result, mixture))
            print(out["ablations"][-1], flush=True)
            save("iapt_report", out, backbone.device)
    prompts = [mixture.prompt(r) for r in mixture.examples("dev", 8)]
    iapt = build_method("iapt", backbone, bottleneck=32)
    bare = build_method("zero_shot", backbone)
    times = alternate({"iapt": lambda: generate(iapt, backbone, prompts, 32, min_new_tokens=32, banned=()),
                       "bare_backbone": lambda: generate(bare, backbone, prompts, 32, min_new_tokens=32, banned=())},
                      rounds=3)
    out["decode"] = {k: {**summary(v), "tokens_per_second": 8 * 32 / summary(v)["median"]} for k, v in times.items()}
    out["wall_seconds"] = time.time() - started
    path = save("iapt_report", out, backbone.device)
    print("decode tokens/s:", {k: round(v["tokens_per_second"], 1) for k, v in out["decode"].items()})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
