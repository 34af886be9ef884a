"""Training and evaluation: AdamW, warmup + linear decay, clipping, periodic evaluation, best
checkpoint, exact resume, progress bars, a history DataFrame and a run folder.

Run folder (when ``run_dir`` is given): ``config.json``, ``run_info.json``, ``metrics.json``,
``history.csv``, ``method/`` (best state, safetensors) and ``checkpoint.pt`` (for ``resume=True``).
Every file is written atomically.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from lopt_core.backbone import Backbone
from lopt_core.batching import LengthPolicy, input_limit
from lopt_core.methods import PromptMethod, save_method
from lopt_core.scoring import loss_and_scores
from lopt_core.tasks import Task
from lopt_core.utils import atomic_path, option, read_json, run_info, write_json


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = option(60, "optimiser steps")
    batch_size: int = option(8, "training rows per step")
    lr: float | None = option(None, "learning rate (default: the method's recommended rate)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup: float = option(0.1, "linear warmup: a fraction of the steps (below 1) or a number of steps")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    eval_every: int = option(20, "steps between evaluations (the best one is kept)")
    eval_split: str = option("dev", "split scored during training")
    eval_limit: int | None = option(200, "rows of the eval split scored during training (default: all)")
    eval_batch_size: int = option(32, "rows per evaluation batch")
    final_eval_limit: int | None = option(None, "rows of each split scored at the end (default: all)")
    max_length: int = option(256, "tokens per row at most (also bounded by the backbone's context)")
    patience: int | None = option(None, "evaluations without improvement before stopping early")
    seed: int = option(0, "seed of the data order")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")

    def warmup_steps(self) -> int:
        return int(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def evaluate(method: PromptMethod, backbone: Backbone, task: Task, split: str = "dev",
             limit: int | None = None, batch_size: int = 32, max_length: int = 256,
             progress: bool = False) -> dict:
    """Metrics of ``method`` on a split: accuracy and macro-F1 (classification) or target loss.

    Rows are batched in order of length (length bucketing: less padding); metrics do not depend
    on the order.
    """
    rows = task.examples(split, limit, expand_references=True)
    rows = sorted(rows, key=lambda r: len(task.prompt(r)) + len(r.get("target", "")))
    policy = length_policy(backbone, method, task, max_length, f"evaluate {task.name}/{split}")
    was_training = method.training
    method.eval()
    total_loss, correct, count, preds, golds = 0.0, 0, 0, [], []
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc=f"eval {task.name}/{split}", disable=not progress, leave=False):
        chunk = rows[start:start + batch_size]
        batch = to_device(task.collate(chunk, backbone.tokenizer, policy=policy), backbone.device)
        with backbone.autocast():
            loss, scores = loss_and_scores(method, backbone, batch, task)
        weight = len(chunk) if scores is not None else int(batch["target_mask"][:, 1:].sum())
        total_loss += float(loss) * weight
        count += weight
        if scores is not None:
            preds += scores.argmax(-1).tolist()
            golds += batch["labels"].tolist()
    method.train(was_training)
    policy.warn()
    out = {"split": split, "n": len(rows), "loss": total_loss / max(count, 1)}
    if task.kind == "classification":
        correct = sum(p == g for p, g in zip(preds, golds))
        out["accuracy"] = correct / max(len(golds), 1)
        out["macro_f1"] = macro_f1(preds, golds, task.num_classes)
    else:
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
        out["target_tokens"] = count
    return out


def length_policy(backbone: Backbone, method: PromptMethod, task: Task, max_length: int, where: str) -> LengthPolicy:
    """Rows of at most ``max_length`` tokens, and never more than the backbone's context leaves beside
    the method's extra positions (and label words of several tokens, scored after the prompt); longer
    ones are cut (prompt from the left, BOS kept)."""
    limit = input_limit(backbone, method, max_length, new_tokens=task.answer_tokens(backbone.tokenizer))
    return LengthPolicy(limit, where, backbone.tokenizer.bos_token_id)


def warmup_then_linear(step: int, warm: int, total: int) -> float:
    """LR factor: linear warmup over ``warm`` steps, then linear decay to 0 at ``total``."""
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(total - warm, 1))


def macro_f1(preds: list[int], golds: list[int], num_classes: int) -> float:
    scores = []
    for c in range(num_classes):
        tp = sum(p == c and g == c for p, g in zip(preds, golds))
        fp = sum(p == c and g != c for p, g in zip(preds, golds))
        fn = sum(p != c and g == c for p, g in zip(preds, golds))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / num_classes


def selection_score(metrics: dict) -> float:
    """Higher is better: dev accuracy for classification, minus dev loss for generation."""
    return metrics["accuracy"] if "accuracy" in metrics else -metrics["loss"]


class Trainer:
    """Train one method on one task against a frozen backbone.

    ``callbacks`` are called as ``fn(trainer, record)`` after every step (record: the step's
    history row); raising ``KeyboardInterrupt`` there stops training after a checkpoint is written.
    """

    def __init__(self, method: PromptMethod, backbone: Backbone, task: Task,
                 config: TrainConfig | None = None, run_dir: str | Path | None = None,
                 callbacks: tuple[Callable, ...] = (), overwrite: bool = False, extra_config: dict | None = None):
        self.method, self.backbone, self.task = method, backbone, task
        self.config = config or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = callbacks
        self.overwrite = overwrite
        self.extra_config = extra_config or {}
        self.train_rows = task.examples("train", expand_references=True)
        if not self.train_rows:
            raise ValueError(f"task {task.name!r} has an empty train split")
        params = [p for p in method.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"method {method.name!r} has no trainable parameters: nothing to train")
        self.lr = self.config.lr if self.config.lr is not None else method.recommended_lr
        # Bi-level methods (IAPT's option) train some parameters on dev batches in a step of their own.
        self.outer = method.outer_parameters()
        outer_ids = {id(p) for p in self.outer}
        inner = [p for p in params if id(p) not in outer_ids]
        self.optimizer = torch.optim.AdamW(inner, lr=self.lr, weight_decay=self.config.weight_decay)
        self.outer_optimizer = torch.optim.AdamW(self.outer, lr=method.outer_lr()) if self.outer else None
        if self.outer and self.config.eval_split not in task.splits:
            raise ValueError(f"bi-level training needs a {self.config.eval_split!r} split for its outer step")
        warm, total = self.config.warmup_steps(), self.config.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_then_linear(s, warm, total))
        self.policy = self._check_lengths()
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
        self.scaler = torch.amp.GradScaler(backbone.device.type, enabled=backbone.precision == "fp16")
        self.step, self.history, self.best = 0, [], {"score": -math.inf, "step": None, "metrics": None}
        self.best_state = None

    def _check_lengths(self) -> LengthPolicy:
        """Before step 1: every training row is fitted once (an error names a row with no room for its
        prompt), and one warning says how many rows will be cut to the context."""
        policy = length_policy(self.backbone, self.method, self.task, self.config.max_length,
                               f"training {self.task.name}")
        for i, row in enumerate(self.train_rows):
            self.task.encode(row, self.backbone.tokenizer, policy, index=i)
        policy.warn()
        return LengthPolicy(policy.limit, policy.where, policy.bos_id, record=False)  # steps cut the same rows

    # ------------------------------------------------------------------------------ batches
    def batch_indices(self, step: int) -> list[int]:
        """Rows of the step's batch: a function of (seed, step) only, so resuming is exact."""
        N, B = len(self.train_rows), self.config.batch_size
        out, pos = [], step * B
        while len(out) < B:
            epoch, offset = divmod(pos, N)
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            perm = torch.randperm(N, generator=g)
            take = min(B - len(out), N - offset)
            out += perm[offset:offset + take].tolist()
            pos += take
        return out

    # ------------------------------------------------------------------------------ files
    def _config_record(self) -> dict:
        return {"method": self.method.name, "method_config": self.method.config.to_dict(),
                "task": self.task.name, "task_source": self.task.source, "backbone": self.backbone.name,
                "backbone_spec": self.backbone.spec, "precision": self.backbone.precision,
                "train": {**dataclasses.asdict(self.config), "lr": self.lr},
                "trainable_parameters": self.method.trainable_parameters(),
                "stored_parameters": self.method.stored_parameters(), **self.extra_config}

    def _checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir else None

    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        state = {"step": self.step, "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "outer_optimizer": self.outer_optimizer.state_dict() if self.outer_optimizer else None,
                 "scheduler": self.scheduler.state_dict(), "history": self.history, "best": self.best,
                 "best_state": self.best_state, "config": dataclasses.asdict(self.config),
                 "method_name": self.method.name, "method_config": self.method.config.to_dict()}
        with atomic_path(self._checkpoint_path()) as tmp:
            torch.save(state, tmp)

    def _load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.backbone.device, weights_only=False)
        saved = {k: v for k, v in state["config"].items() if k != "progress"}
        now = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "progress"}
        if saved != now:
            diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
            raise ValueError(f"cannot resume {path}: the training config differs (saved, now): {diff}")
        mine = (self.method.name, self.method.config.to_dict())
        if (state["method_name"], state["method_config"]) != mine:
            raise ValueError(f"cannot resume {path}: it holds {state['method_name']} {state['method_config']}, "
                             f"not {mine[0]} {mine[1]}")
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.outer_optimizer is not None:
            self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history, self.best = state["step"], state["history"], state["best"]
        self.best_state = state["best_state"]

    def _prepare_run_dir(self, resume: bool) -> None:
        if self.run_dir is None:
            if resume:
                raise ValueError("resume=True needs a run_dir to resume from")
            return
        ckpt = self._checkpoint_path()
        if resume and ckpt.is_file():
            self._load_checkpoint(ckpt)
            return
        if (self.run_dir / "config.json").exists() and not resume and not self.overwrite:
            raise FileExistsError(f"{self.run_dir} already holds a run. Pass resume=True to continue it, "
                                  "overwrite=True to replace it, or choose another folder.")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("checkpoint.pt", "metrics.json", "history.csv", "loss.png"):  # overwrite=True
            (self.run_dir / stale).unlink(missing_ok=True)
        write_json(self.run_dir / "config.json", self._config_record())
        write_json(self.run_dir / "run_info.json", run_info(self.config.seed, self.backbone.device))

    # ------------------------------------------------------------------------------ loop
    def train_step(self) -> dict:
        c = self.config
        rows = [self.train_rows[i] for i in self.batch_indices(self.step)]
        batch = to_device(self.task.collate(rows, self.backbone.tokenizer, policy=self.policy), self.backbone.device)
        self.method.train()
        start = time.perf_counter()
        with self.backbone.autocast():
            loss, _ = loss_and_scores(self.method, self.backbone, batch, self.task)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss.item()} at step {self.step + 1} (lr={self.scheduler.get_last_lr()[0]:.3g}). "
                "Lower the learning rate (lr=...), check the method's initialisation and the data; "
                + (f"the last good checkpoint is {self._checkpoint_path()}." if self.run_dir
                   else "no checkpoint was kept."))
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = self.optimizer.param_groups[0]["params"]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        record = {"step": self.step + 1, "loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item()}
        if self.outer_optimizer is not None:
            record["outer_loss"] = self.outer_step()
        self.step += 1
        return {**record, "seconds": time.perf_counter() - start, "tokens": int(batch["attention_mask"].sum())}

    def outer_step(self) -> float:
        """Bi-level: one step of the outer parameters on a dev batch (a function of seed and step)."""
        c = self.config
        rows = self.task.examples(c.eval_split, expand_references=True)
        g = torch.Generator().manual_seed(c.seed * 7_919 + self.step)
        pick = torch.randint(len(rows), (min(c.batch_size, len(rows)),), generator=g).tolist()
        batch = to_device(self.task.collate([rows[i] for i in pick], self.backbone.tokenizer, policy=self.policy),
                          self.backbone.device)
        self.method.zero_grad(set_to_none=True)
        with self.backbone.autocast():
            loss, _ = loss_and_scores(self.method, self.backbone, batch, self.task)
        loss.backward()
        self.outer_optimizer.step()
        self.method.zero_grad(set_to_none=True)
        return loss.item()

    def evaluate(self, split: str | None = None, limit: int | None = None) -> dict:
        c = self.config
        return evaluate(self.method, self.backbone, self.task, split or c.eval_split, limit,
                        c.eval_batch_size, c.max_length)

    def fit(self, resume: bool = False) -> FitResult:
        """Train to ``config.steps`` (continuing a checkpoint with ``resume=True``)."""
        c = self.config
        self._prepare_run_dir(resume)
        has_eval = c.eval_split in self.task.splits
        bar = tqdm(total=c.steps, initial=self.step, desc=f"{self.method.name} on {self.task.name}",
                   disable=not c.progress)
        stale = 0
        try:
            while self.step < c.steps:
                record = self.train_step()
                if has_eval and (self.step % c.eval_every == 0 or self.step == c.steps):
                    metrics = self.evaluate(limit=c.eval_limit)
                    record.update({f"eval_{k}": v for k, v in metrics.items() if isinstance(v, float)})
                    if selection_score(metrics) > self.best["score"]:
                        self.best = {"score": selection_score(metrics), "step": self.step, "metrics": metrics}
                        self.best_state = copy.deepcopy(self.method.state_dict())
                        stale = 0
                    else:
                        stale += 1
                    self.history.append(record)
                    self.save_checkpoint()
                else:
                    self.history.append(record)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in record.items()
                                 if k in ("loss", "eval_accuracy", "eval_loss")})
                for fn in self.callbacks:
                    fn(self, record)
                if c.patience is not None and stale >= c.patience:
                    break
        except KeyboardInterrupt:
            self.save_checkpoint()
            bar.close()
            raise
        bar.close()
        self.save_checkpoint()
        return self._finish()

    def _finish(self) -> FitResult:
        if self.best_state is not None:
            self.method.load_state_dict(self.best_state)
        history = pd.DataFrame(self.history)
        metrics = {"method": self.method.name, "task": self.task.name, "backbone": self.backbone.name,
                   "steps": self.step, "best_step": self.best["step"],
                   "trainable_parameters": self.method.trainable_parameters(),
                   "stored_parameters": self.method.stored_parameters(),
                   "seconds_per_step": float(history["seconds"].median()) if len(history) else None}
        c = self.config
        for split in ("dev", "test"):
            if split not in self.task.splits:
                continue
            if (split == c.eval_split and c.final_eval_limit == c.eval_limit and self.best_state is not None
                    and self.best["metrics"] is not None):
                # The best state was scored on exactly these rows when it was selected, and scoring is
                # deterministic: reuse that instead of running the same evaluation again.
                metrics[split] = copy.deepcopy(self.best["metrics"])
            else:
                metrics[split] = self.evaluate(split, limit=c.final_eval_limit)
        if self.run_dir is not None:
            with atomic_path(self.run_dir / "history.csv") as tmp:
                history.to_csv(tmp, index=False)
            save_method(self.method, self.run_dir / "method", self.backbone.name)
            if len(history):
                from lopt_core import plots  # matplotlib only when there is a figure to write

                fig = plots.loss_curves({self.method.name: history})
                plots.save(fig, self.run_dir / "loss.png")
                plots.plt.close(fig)
            write_json(self.run_dir / "metrics.json", metrics)
        return FitResult(history=history, metrics=metrics, run_dir=self.run_dir)


@dataclass
class FitResult:
    history: pd.DataFrame
    metrics: dict
    run_dir: Path | None

    def __repr__(self) -> str:
        dev = self.metrics.get("dev", {})
        if "accuracy" in dev:
            score = f"dev accuracy {dev['accuracy']:.3f}"
        else:
            score = f"dev loss {dev.get('loss', float('nan')):.3f}"
        return f"FitResult({self.metrics['method']} on {self.metrics['task']}: {score}, steps={self.metrics['steps']})"


def load_run(run_dir: str | Path) -> dict:
    """The config and metrics of a finished run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (config.json missing)")
    out = {"config": read_json(run_dir / "config.json")}
    if (run_dir / "metrics.json").is_file():
        out["metrics"] = read_json(run_dir / "metrics.json")
    return out
