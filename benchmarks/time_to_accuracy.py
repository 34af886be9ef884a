"""Time to accuracy on real SST-2: the kit's prompt tuning against PEFT PromptTuning, in one process.

    python benchmarks/time_to_accuracy.py [--target 0.84] [--seeds 0 1 2] [--max-steps 150]

Same frozen backbone (the embedded SmolLM2), same batch size (8), n = 20 virtual tokens started from the
same 20 vocabulary embeddings, AdamW with 10% warmup and linear decay over ``--max-steps``. The kit trains
as it does by default: the loss on the label words only, batches grouped by length. PEFT trains as its
users do: the causal-LM loss (full vocabulary) on the label token, batches in plain random order. Every 5
steps both are scored by the same scorer (the kit's rank classification over " negative"/" positive") on
the same 500 validation rows, with the clock paused; a side's time is the sum of its step times until
the first score at or above ``--target``. Each side runs at the rate of the grid (3e-3, 1e-2, 3e-2, 1e-1)
that reaches the target fastest with seed 0 (a race already slower than that side's best is stopped);
then every seed runs at those rates. Reported: steps to target and seconds per step separately, their
medians over seeds, ``ratio`` = PEFT's median time / the kit's, and the padding efficiency (real tokens /
computed tokens) of both batch orders. Writes ``benchmarks/results/time_to_accuracy.json``.
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch

from lopt_core.data import load_task
from lopt_core.data.sampler import batch_indices, padding_efficiency
from lopt_core.evaluation.evaluator import evaluate
from lopt_core.methods import build_method
from lopt_core.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from lopt_core.training.config import TrainConfig, warmup_then_linear
from lopt_core.training.trainer import Trainer

from harness.results import data_option, save
from harness.timing import embedded_backbone

GRID = (3e-3, 1e-2, 3e-2, 1e-1)
N, BATCH, EVERY, VALIDATION_ROWS = 20, 8, 5, 500


class KitSide:
    """The kit's Trainer, stepped by hand so the race's clock sees only training steps."""

    def __init__(self, backbone, task, lr, seed, max_steps):
        self.method = build_method("prompt_tuning", backbone, prompt_len=N, seed=seed)
        config = TrainConfig(steps=max_steps, batch_size=BATCH, lr=lr, seed=seed, progress=False)
        self.trainer = Trainer(self.method, backbone, task, config)

    def step(self):
        self.trainer.train_step()

    def scorer(self):
        return self.method


class PeftSide:
    """PEFT PromptTuning on the same backbone, started from the kit's initial prompt, with the causal-LM loss."""

    def __init__(self, backbone, task, lr, seed, max_steps):
        from peft import PromptTuningConfig as PeftConfig
        from peft import get_peft_model

        start = build_method("prompt_tuning", backbone, prompt_len=N, seed=seed).prompt.detach()
        config = PeftConfig(task_type="CAUSAL_LM", num_virtual_tokens=N)
        self.model = get_peft_model(copy.deepcopy(backbone.model), config)
        self.embedding = self.model.prompt_encoder["default"].embedding
        with torch.no_grad():
            self.embedding.weight.copy_(start)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        warm = int(0.1 * max_steps)
        schedule = lambda s: warmup_then_linear(s, warm, max_steps)  # noqa: E731  (the kit's schedule)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.backbone, self.task, self.seed, self.count = backbone, task, seed, 0
        self.rows = task.examples("train")
        tok = backbone.tokenizer
        words = task.verbalizer(tok).token_ids
        self.label_ids = [w[0] for w in words]
        self.scoring = PromptTuning(PromptTuningConfig(prompt_len=N), backbone, prompt=start)

    def step(self):
        tok, rows = self.backbone.tokenizer, self.rows
        batch = [rows[i] for i in batch_indices(len(rows), BATCH, self.seed, self.count)]  # plain random order
        seqs = [tok(self.task.prompt(r))["input_ids"] + [self.label_ids[r["label"]]] for r in batch]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_token_id)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for i, s in enumerate(seqs):
            ids[i, :len(s)], mask[i, :len(s)], labels[i, len(s) - 1] = torch.tensor(s), 1, s[-1]
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.count += 1

    def scorer(self):
        with torch.no_grad():
            self.scoring.prompt.copy_(self.embedding.weight)
        return self.scoring


def race(side, backbone, task, target, max_steps, give_up: float = math.inf) -> dict:
    """Train until the validation score first reaches ``target`` (scored every 5 steps, clock paused)."""
    clock, times, curve = 0.0, [], []
    for step in range(1, max_steps + 1):
        start = time.perf_counter()
        side.step()
        times.append(time.perf_counter() - start)
        clock += times[-1]
        if step % EVERY == 0:
            accuracy = evaluate(side.scorer(), backbone, task, "validation", limit=VALIDATION_ROWS)["accuracy"]
            curve.append({"step": step, "seconds": clock, "accuracy": accuracy})
            if accuracy >= target:
                return {"reached": True, "steps": step, "seconds": clock, "seconds_per_step": statistics.median(times),
                        "curve": curve}
        if clock > give_up:
            break
    return {"reached": False, "steps": None, "seconds": None, "seconds_per_step": statistics.median(times),
            "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_option(parser, "sst2")
    parser.add_argument("--target", type=float, default=0.84)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=150)
    args = parser.parse_args()
    backbone = embedded_backbone()
    task = load_task("sst2", path=args.data)
    zero = evaluate(build_method("zero_shot", backbone), backbone, task, "validation", limit=VALIDATION_ROWS)
    print(f"zero-shot on the {VALIDATION_ROWS} validation rows: {zero['accuracy']:.3f}; target {args.target}",
          flush=True)
    sides = {"kit": KitSide, "peft": PeftSide}
    grid, best = {}, {}
    for name, make in sides.items():  # each side's fastest rate of the grid, seed 0
        grid[name], fastest = {}, math.inf
        for lr in GRID:
            result = race(make(backbone, task, lr, args.seeds[0], args.max_steps), backbone, task, args.target,
                          args.max_steps, give_up=fastest)
            grid[name][lr] = result
            fastest = min(fastest, result["seconds"] if result["reached"] else math.inf)
            print(name, lr, {k: v for k, v in result.items() if k != "curve"}, flush=True)
        best[name] = min(GRID, key=lambda lr: grid[name][lr]["seconds"] if grid[name][lr]["reached"] else math.inf)
        if not grid[name][best[name]]["reached"]:
            raise SystemExit(f"{name} reached {args.target} at no rate of the grid in {args.max_steps} steps: "
                             "lower --target or raise --max-steps")
    runs = {name: {args.seeds[0]: grid[name][best[name]]} for name in sides}
    for seed in args.seeds[1:]:
        for name, make in sides.items():
            runs[name][seed] = race(make(backbone, task, best[name], seed, args.max_steps), backbone, task,
                                    args.target, args.max_steps)
            print(name, seed, {k: v for k, v in runs[name][seed].items() if k != "curve"}, flush=True)
    def median(name, key):  # a seed that never reached the target counts as infinitely slow
        return statistics.median([math.inf if r[key] is None else r[key] for r in runs[name].values()])

    medians = {name: {"steps": median(name, "steps"), "seconds": median(name, "seconds"),
                      "seconds_per_step": median(name, "seconds_per_step"),
                      "seeds_reaching_target": sum(r["reached"] for r in runs[name].values())} for name in sides}
    lengths = [len(backbone.tokenizer(task.prompt(r))["input_ids"]) for r in task.examples("train")]
    order = {"grouped (the kit)": tuple(lengths), "plain shuffle (PEFT)": None}
    efficiency = {k: padding_efficiency(lengths, [batch_indices(len(lengths), BATCH, 0, s, lengths=v)
                                                  for s in range(300)]) for k, v in order.items()}
    ratio = medians["peft"]["seconds"] / medians["kit"]["seconds"]
    path = save("time_to_accuracy", {
        "config": {"target": args.target, "validation_rows": VALIDATION_ROWS, "score_every": EVERY, "batch_size": BATCH,
                   "virtual_tokens": N, "max_steps": args.max_steps, "grid": GRID, "seeds": args.seeds},
        "zero_shot_validation_accuracy": zero["accuracy"], "best_lr": best,
        "grid_seed0": {name: {str(lr): {k: v for k, v in r.items() if k != "curve"} for lr, r in g.items()}
                       for name, g in grid.items()},
        "runs": {name: {str(s): r for s, r in rs.items()} for name, rs in runs.items()},
        "median": medians, "ratio": ratio, "padding_efficiency": efficiency}, backbone.device)
    for name in sides:
        m = medians[name]
        print(f"{name:5s} lr {best[name]:g}: {m['steps']:.0f} steps × {m['seconds_per_step']:.2f} s "
              f"= {m['seconds']:.0f} s (median; {m['seeds_reaching_target']} of {len(args.seeds)} seeds reached it)")
    print(f"ratio (PEFT time / kit time) {ratio:.2f}; padding efficiency {efficiency}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
