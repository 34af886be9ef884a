"""Training: AdamW, warmup + linear decay, clipping, evaluation on validation with the best state kept,
test scored once at the end, exact resume, progress bars and a history DataFrame.

The loop is minGPT's shape; its jobs live beside it: the batch order in ``sampler`` (a pure function of
seed and step), evaluation in ``evaluation``, the run folder (files, checkpoints, resume rules) in
``runs``. Validation selects and is never reported; ``metrics["test"]`` is the number to report.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from lopt_core.data.batching import LengthPolicy
from lopt_core.data.sampler import batch_indices
from lopt_core.data.task import Task
from lopt_core.evaluation.evaluator import evaluate, selection_score, to_device
from lopt_core.methods import PromptMethod
from lopt_core.model.backbone import Backbone
from lopt_core.training.accelerate import LossModule, make_accelerator
from lopt_core.training.runs import RunFolder, load_run  # noqa: F401  (load_run: re-exported for users)
from lopt_core.utils import KitError, option, run_info


class TrainingDiverged(KitError, FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = option(60, "optimiser steps")
    batch_size: int = option(8, "training rows per step")
    lr: float | None = option(None, "learning rate (default: the method's recommended rate)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup: float = option(0.1, "linear warmup: a fraction of the steps (below 1) or a number of steps")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    eval_every: int = option(20, "steps between evaluations on the validation split (the best state is kept)")
    eval_split: str = option("validation", "the split that selects; never reported")
    eval_limit: int | None = option(200, "validation rows scored during training (default: all)")
    eval_batch_size: int = option(32, "rows per evaluation batch")
    test_split: str | None = option("test", "the split scored once after training, the number to report "
                                            "(none: no test score, e.g. in a learning-rate grid)")
    final_eval_limit: int | None = option(None, "rows of validation and test scored at the end (default: all)")
    max_length: int = option(256, "tokens per row at most (also bounded by the backbone's context)")
    group_by_length: bool = option(True, "batch rows of similar length together (less padding; order stays random)")
    gradient_accumulation: int = option(1, "batches per optimiser step (global batch: batch_size × this × processes)")
    gradient_checkpointing: bool = option(False, "recompute each decoder layer in backward: less activation memory")
    patience: int | None = option(None, "evaluations without improvement before stopping early")
    seed: int = option(0, "seed of the data order")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "max_length", "gradient_accumulation"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")
        if self.test_split is not None and self.test_split == self.eval_split:
            raise ValueError(f"the split that selects ({self.eval_split!r}) cannot also be the one reported")

    def warmup_steps(self) -> int:
        return int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)


def warmup_then_linear(step: int, warm: int, total: int) -> float:
    """LR factor: linear warmup over ``warm`` steps, then linear decay to 0 at ``total``."""
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(total - warm, 1))


class Trainer:
    """Train one method on one task against a frozen backbone.

    ``callbacks`` are called as ``fn(trainer, record)`` after every step (record: the step's history
    row); raising ``KeyboardInterrupt`` there stops training after a checkpoint is written. A parameter
    group marked ``outer`` (IAPT's bi-level option) is trained on an ``outer`` split carved from train,
    so neither the training nor the selection rows are seen by it.
    """

    def __init__(self, method: PromptMethod, backbone: Backbone, task: Task, config: TrainConfig | None = None,
                 run_dir: str | Path | None = None, callbacks: tuple[Callable, ...] = (), overwrite: bool = False,
                 extra_config: dict | None = None):
        self.method, self.backbone, self.config = method, backbone, config or TrainConfig()
        c = self.config
        groups = [g for g in method.param_groups(c.lr if c.lr is not None else method.recommended_lr) if g["params"]]
        if not groups:
            raise ValueError(f"method {method.name!r} has no trainable parameters: nothing to train")
        self.lr, self.bilevel = groups[0]["lr"], any(g.get("outer") for g in groups)
        self.task = task.copy().carve("outer", "train") if self.bilevel else task
        self.train_rows = self.task.examples("train", expand_references=True)
        self.outer_rows = self.task.examples("outer", expand_references=True) if self.bilevel else []
        if not self.train_rows:
            raise ValueError(f"task {task.name!r} has an empty train split")
        self.accelerator = make_accelerator(backbone, c.gradient_accumulation)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.model = self.accelerator.prepare(LossModule(method, backbone, self.task))  # DDP when world > 1
        self.optimizer = self.accelerator.prepare(torch.optim.AdamW(groups, weight_decay=c.weight_decay))
        warm, total = c.warmup_steps(), c.steps  # stepped by hand: Accelerate's wrapper steps once per process
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer,
                                                           lambda s: warmup_then_linear(s, warm, total))
        self.policy, self.lengths = self._check_lengths()
        self.run = RunFolder(run_dir, overwrite) if run_dir is not None else None
        self.run_dir = self.run.path if self.run else None
        self.callbacks, self.extra_config = callbacks, extra_config or {}
        self.step, self.history, self.best, self.best_state = 0, [], {"score": -math.inf, "step": None}, None
        self.evaluations: Counter = Counter()  # evaluations per split (test: once, after training)

    @property
    def main(self) -> bool:
        """Only the main process writes the run folder and shows progress."""
        return self.accelerator.is_main_process

    def _check_lengths(self) -> tuple[LengthPolicy, tuple[int, ...]]:
        """Before step 1: every training row is fitted once (an error names a row with no room for its
        prompt; one warning says how many will be cut); their lengths group batches."""
        policy = self.task.length_policy(self.backbone, self.method, self.config.max_length,
                                         f"training {self.task.name}")
        tokenizer = self.backbone.tokenizer
        lengths = tuple(sum(map(len, self.task.encode(row, tokenizer, policy, index=i)))
                        for i, row in enumerate(self.train_rows))
        for i, row in enumerate(self.outer_rows):  # IAPT's bi-level rows: checked before step 1 too
            self.task.encode(row, tokenizer, policy, index=f"{i} of the outer split")
        if self.main:
            policy.warn()
        return LengthPolicy(policy.limit, policy.where, policy.bos_id, record=False), lengths

    def batch_indices(self, micro_step: int, split: str = "train") -> list[int]:
        """This process's rows of a micro-batch: a function of (seed, step, rank, world size) only."""
        c = self.config
        if split == "train":
            return batch_indices(len(self.train_rows), c.batch_size, c.seed, micro_step, self.rank, self.world,
                                 lengths=self.lengths if c.group_by_length else None)
        n = len(self.outer_rows)
        return batch_indices(n, min(c.batch_size, n), c.seed + 7_919, micro_step, self.rank, self.world)

    def _batches(self, split: str, micro_steps: range) -> list[dict]:
        rows = self.train_rows if split == "train" else self.outer_rows
        collate = self.task.collate
        return [to_device(collate([rows[i] for i in self.batch_indices(m, split)], self.backbone.tokenizer,
                                  policy=self.policy), self.backbone.device) for m in micro_steps]

    def _backward(self, batches: list[dict], accumulate: bool = True) -> tuple[float, int]:
        """Forward and backward of micro-batches, the loss divided by the count of the whole global batch
        (rows, or target tokens of generation tasks, over every micro-batch and process)."""
        counts = [len(b["labels"]) if "labels" in b else int(b["target_mask"][:, 1:].sum()) for b in batches]
        count = int(self.accelerator.reduce(torch.tensor(sum(counts), device=self.backbone.device), "sum"))
        scale = self.config.gradient_accumulation * self.world / count  # backward divides by K, DDP averages
        summed = torch.zeros((), device=self.backbone.device)
        checkpointing = self.config.gradient_checkpointing
        for batch in batches:
            sync = self.accelerator.accumulate(self.model) if accumulate else nullcontext()
            with sync, self.backbone.autocast(), self.backbone.gradient_checkpointing(checkpointing):
                total, _ = self.model(batch)
                self._check_finite(total)
                self.accelerator.backward(total * scale)
            summed += total.detach()
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        return float(self.accelerator.reduce(summed, "sum")) / count, tokens

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            where = f"the last good checkpoint is {self.run.checkpoint}." if self.run else "no checkpoint was kept."
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {self.step + 1} (lr={self.scheduler.get_last_lr()[0]:.3g}). "
                f"Lower the learning rate (lr=...), check the method's initialisation and the data; {where}")

    def _optimiser_step(self, outer: bool) -> float:
        """Clip and step the inner groups (or the outer ones) only."""
        for group in self.optimizer.param_groups:
            if bool(group.get("outer")) != outer:
                for p in group["params"]:
                    p.grad = None  # AdamW skips parameters without a gradient
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def train_step(self) -> dict:
        self.method.train()
        start, K = time.perf_counter(), self.config.gradient_accumulation
        micro = range(self.step * K, (self.step + 1) * K)
        loss, tokens = self._backward(self._batches("train", micro))
        record = {"step": self.step + 1, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                  "grad_norm": self._optimiser_step(outer=False)}
        if self.bilevel:  # one step of the outer groups on the outer split (IAPT's bi-level option)
            record["outer_loss"], _ = self._backward(self._batches("outer", range(self.step, self.step + 1)),
                                                     accumulate=False)
            self._optimiser_step(outer=True)
        self.scheduler.step()
        self.step += 1
        return {**record, "seconds": time.perf_counter() - start, "tokens": tokens}

    def evaluate(self, split: str, limit: int | None = None) -> dict:
        self.evaluations[split] += 1
        c = self.config
        return evaluate(self.method, self.backbone, self.task, split, limit, c.eval_batch_size, c.max_length)

    def fit(self, resume: bool = False) -> FitResult:
        """Train to ``config.steps`` (continuing a checkpoint with ``resume=True``), then score test once."""
        c = self.config
        if resume and self.run is None:
            raise ValueError("resume=True needs a run_dir to resume from")
        if self.run is not None:
            resuming = resume and self.run.checkpoint.is_file()
            if self.main:
                self.run.open(self._record(), self._info(), resume)
            self.accelerator.wait_for_everyone()
            if resuming:
                self.load_state_dict(self.run.load_checkpoint(self._identity(), self.backbone.device))
        selects = c.eval_split in self.task.splits
        bar = tqdm(total=c.steps, initial=self.step, desc=f"{self.method.name} on {self.task.name}",
                   disable=not (c.progress and self.main))
        stale = 0
        try:
            while self.step < c.steps and (c.patience is None or stale < c.patience):
                record = self.train_step()
                if selects and (self.step % c.eval_every == 0 or self.step == c.steps):
                    metrics = self.evaluate(c.eval_split, c.eval_limit)
                    record.update({f"eval_{k}": v for k, v in metrics.items() if isinstance(v, float)})
                    if selection_score(metrics) > self.best["score"]:
                        self.best = {"score": selection_score(metrics), "step": self.step, "metrics": metrics}
                        self.best_state, stale = copy.deepcopy(self.method.state_dict()), 0
                    else:
                        stale += 1
                self.history.append(record)
                if self.run is not None and "eval_loss" in record and self.main:
                    self.run.save_checkpoint(self.state_dict())
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in record.items()
                                 if k in ("loss", "eval_accuracy", "eval_loss")})
                for fn in self.callbacks:
                    fn(self, record)
        except KeyboardInterrupt:
            if self.run is not None and self.main:
                self.run.save_checkpoint(self.state_dict())
            raise
        finally:
            bar.close()
        if self.run is not None and self.main:
            self.run.save_checkpoint(self.state_dict())
        return self._finish()

    def _finish(self) -> FitResult:
        """Restore the best state; its validation metrics are the selection, test is scored here, once."""
        c = self.config
        if self.best_state is not None:
            self.method.load_state_dict(self.best_state)
        history = pd.DataFrame(self.history)
        metrics = {"method": self.method.name, "task": self.task.name, "backbone": self.backbone.name,
                   "steps": self.step, "best_step": self.best["step"], "lr": self.lr,
                   "selection": {"split": c.eval_split, "metric": "accuracy" if self.task.kind == "classification"
                                 else "loss", "best_step": self.best["step"]},
                   "split_notes": dict(self.task.split_notes),
                   "trainable_parameters": self.method.trainable_parameters(),
                   "stored_parameters": self.method.stored_parameters(),
                   "seconds_per_step": float(history["seconds"].median()) if len(history) else None}
        if c.eval_split in self.task.splits:
            # the best state was scored on these rows when it was selected, and scoring is deterministic
            same_rows = c.final_eval_limit == c.eval_limit and self.best.get("metrics") is not None
            metrics["validation"] = (copy.deepcopy(self.best["metrics"]) if same_rows
                                     else self.evaluate(c.eval_split, c.final_eval_limit))
        if c.test_split is not None and c.test_split in self.task.splits:
            metrics["test"] = self.evaluate(c.test_split, c.final_eval_limit)
        if self.run is not None and self.main:
            self.run.write_results(history, metrics, self.method, self.backbone.name)
        self.accelerator.wait_for_everyone()
        return FitResult(history=history, metrics=metrics, run_dir=self.run_dir)

    # ------------------------------------------------------------------------------ files
    def _identity(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "method_name": self.method.name,
                "method_config": self.method.config.to_dict()}

    def _record(self) -> dict:
        return {"method": self.method.name, "method_config": self.method.config.to_dict(), "task": self.task.name,
                "task_source": self.task.source, "split_notes": dict(self.task.split_notes),
                "backbone": self.backbone.name, "backbone_spec": self.backbone.spec,
                "precision": self.backbone.precision, "dtype": str(self.backbone.dtype).removeprefix("torch."),
                "train": {**dataclasses.asdict(self.config), "lr": self.lr},
                "trainable_parameters": self.method.trainable_parameters(),
                "stored_parameters": self.method.stored_parameters(), **self.extra_config}

    def _info(self) -> dict:
        return {**run_info(self.config.seed, self.backbone.device), "world_size": self.world,
                "global_batch_size": self.config.batch_size * self.config.gradient_accumulation * self.world,
                "mixed_precision": self.accelerator.mixed_precision}

    def state_dict(self) -> dict:
        """Everything a resume needs: tensors and plain data only (read back with weights_only=True)."""
        scaler = self.accelerator.scaler
        return {"step": self.step, "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "history": self.history, "best": self.best, "best_state": self.best_state, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step, self.history, self.best, self.best_state = (state["step"], state["history"], state["best"],
                                                               state["best_state"])


@dataclass
class FitResult:
    history: pd.DataFrame
    metrics: dict
    run_dir: Path | None

    def __repr__(self) -> str:
        shown = []
        for split in ("validation", "test"):
            m = self.metrics.get(split, {})
            if m:
                value = f"accuracy {m['accuracy']:.3f}" if "accuracy" in m else f"loss {m['loss']:.3f}"
                shown.append(f"{split} {value}")
        return (f"FitResult({self.metrics['method']} on {self.metrics['task']}: {', '.join(shown) or 'no evaluation'}, "
                f"steps={self.metrics['steps']})")
