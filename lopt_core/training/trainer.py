"""Training: AdamW, warmup + linear decay, clipping, evaluation on validation with the best state kept,
test scored once at the end, exact resume, progress bars and a history DataFrame.

The loop is minGPT's shape; its jobs live beside it: the configuration and its schedule in ``config``, the
batches (length checks, the order of ``data.sampler``) in ``batches``, loss scaling and clipped steps in
``optimiser``, validation and test in ``selection``, a method's outer step (bi-level training) in ``outer``,
the run folder (its files, checkpoints and resume rules) in ``runs``, the metrics of a run in ``evaluation``.
Validation selects and is never reported; ``metrics["test"]`` is the number to report.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from lopt_core.data.task import Task
from lopt_core.evaluation.evaluator import run_metrics
from lopt_core.methods import PromptMethod
from lopt_core.model.backbone import Backbone
from lopt_core.training import outer
from lopt_core.training.accelerate import LossModule, make_accelerator
from lopt_core.training.batches import Batches
from lopt_core.training.config import TrainConfig
from lopt_core.training.dynamics import Dynamics
from lopt_core.training.optimiser import Optimiser
from lopt_core.training.runs import RunFolder, run_config, run_environment, run_identity
from lopt_core.training.selection import Selection
from lopt_core.utils import KitError, read_json


class TrainingDiverged(KitError, FloatingPointError):
    """The loss became NaN or infinite."""


class Trainer:
    """Train one method on one task against a frozen backbone.

    ``callbacks`` are called as ``fn(trainer, record)`` after every step (record: the step's history row);
    raising ``KeyboardInterrupt`` there stops training after a checkpoint is written. Parameter groups the
    method trains apart (``method.outer_groups()``) take an ``outer.OuterStep`` after each training step.
    """

    def __init__(self, method: PromptMethod, backbone: Backbone, task: Task, config: TrainConfig | None = None,
                 run_dir: str | Path | None = None, callbacks: tuple[Callable, ...] = (), overwrite: bool = False,
                 extra_config: dict | None = None):
        c = config or TrainConfig()
        # the method's rate and decay where the config names none, written into the config: the run's config.json
        # and its checkpoint say what ran, and a run that named them equals one that left them to the method
        decay = method.recommended_weight_decay if c.weight_decay is None else c.weight_decay
        c = dataclasses.replace(c, lr=method.recommended_lr if c.lr is None else c.lr, weight_decay=decay)
        self.method, self.backbone, self.config = method, backbone, c
        groups = [g for g in method.param_groups(c.lr) if g["params"]]
        if not groups:
            raise ValueError(f"method {method.name!r} has no trainable parameters: nothing to train")
        if c.precondition is not None and not method.factor_pairs():
            raise ValueError(f"precondition needs factor pairs X = A B to precondition; method {method.name!r} has "
                             "none (LoPT-1 has, X = U V). Leave precondition=None for this method.")
        outer_groups = [g for g in method.outer_groups() if g["params"]]
        self.lr, self.params = groups[0]["lr"], [p for g in groups for p in g["params"]]  # the training step's
        self.task = outer.carve(task) if outer_groups else task
        rows = self.task.examples("train", expand_references=True)
        if not rows:
            raise ValueError(f"task {task.name!r} has an empty train split")
        self.accelerator = make_accelerator(backbone, c.gradient_accumulation)
        self.main = self.accelerator.is_main_process  # only the main process writes files and shows progress
        self.optimiser = Optimiser(self.accelerator, LossModule(method, backbone, self.task), groups + outer_groups,
                                   backbone, c, check=self._check_finite, pairs=method.factor_pairs())
        policy = self.task.length_policy(backbone, method, c.max_length, f"training {self.task.name}")
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self.batches = Batches(self.task, rows, backbone, policy, batch_size=c.batch_size, seed=c.seed, rank=rank,
                               world=world, accumulation=c.gradient_accumulation, by_length=c.group_by_length)
        self.outer = (outer.OuterStep(outer_groups, self.task, backbone, policy, c, rank, world)
                      if outer_groups else None)
        if self.main:
            policy.warn()  # once, for every row fitted above
        self.run = RunFolder(run_dir, overwrite) if run_dir is not None else None
        self.run_dir = self.run.path if self.run else None
        self.callbacks, self.extra_config = callbacks, extra_config or {}
        self.selection = Selection(method, backbone, self.task, c)
        self.step, self.history = 0, []
        self.dynamics = Dynamics(method) if c.dynamics else None

    def train_step(self) -> dict:
        """One optimiser step over the step's micro-batches, then the method's outer step if it has one."""
        self.method.train()
        start = time.perf_counter()
        loss, tokens = self.optimiser.backward(self.batches(self.step))
        probe = self.dynamics.before_step() if self.dynamics else {}
        record = {"step": self.step + 1, "loss": loss, "lr": self.optimiser.lr,
                  "grad_norm": self.optimiser.step(self.params), **probe}
        self._check_parameters(record)
        if self.dynamics:
            record.update(self.dynamics.after_step())
        if self.outer is not None:
            record.update(self.outer.step(self.optimiser, self.step))
        self.optimiser.schedule()
        self.step += 1
        return {**record, "seconds": time.perf_counter() - start, "tokens": tokens}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            self._diverged(f"the loss became {loss.item()} at step {self.step + 1} (lr={self.optimiser.lr:.3g}). "
                           "Lower the learning rate (lr=...), check the method's initialisation and the data")

    def _check_parameters(self, record: dict) -> None:
        """A step can diverge before the loss does: a finite loss with an infinite gradient leaves NaN parameters
        after clipping, and the next forward (or the dynamics' SVD of the prompt) would fail on them unclearly.
        One stacked check, so one device synchronisation per step on an accelerator."""
        named = [(name, p) for name, p in self.method.named_parameters() if p.requires_grad]
        if not named or torch.stack([torch.isfinite(p).all() for _, p in named]).all():
            return
        bad = [name for name, p in named if not torch.isfinite(p).all()]
        self._diverged(f"the parameters {bad} became non-finite at step {self.step + 1} (loss {record['loss']:.4g}, "
                       f"gradient norm {record['grad_norm']:.4g}, lr={self.optimiser.lr:.3g}). Lower the learning "
                       "rate (lr=...)")

    def _diverged(self, what: str) -> None:
        where = f"the last good checkpoint is {self.run.checkpoint}." if self.run else "no checkpoint was kept."
        raise TrainingDiverged(f"{what}; {where}")

    def fit(self, resume: bool = False) -> FitResult:
        """Train to ``config.steps`` (continuing a checkpoint with ``resume=True``), then score test once."""
        c = self.config
        if resume and self.run is None:
            raise ValueError("resume=True needs a run_dir to resume from")
        if self.run is not None:
            self._open(resume)
        bar = tqdm(total=c.steps, initial=self.step, desc=f"{self.method.name} on {self.task.name}",
                   disable=not (c.progress and self.main))
        stale = 0  # evaluations without improvement
        try:
            while self.step < c.steps and (c.patience is None or stale < c.patience):
                record = self.train_step()
                if self.selection.due(self.step):
                    metrics, improved = self.selection.select(self.step)
                    record.update({f"eval_{key}": value for key, value in metrics.items() if isinstance(value, float)})
                    stale = 0 if improved else stale + 1
                self.history.append(record)
                if "eval_loss" in record:
                    self._save()
                bar.update(1)
                bar.set_postfix({key: f"{value:.3f}" for key, value in record.items() if key in POSTFIX})
                for fn in self.callbacks:
                    fn(self, record)
        except KeyboardInterrupt:
            self._save()
            raise
        finally:
            bar.close()
        self._save()
        return self._finish()

    def adopt(self, folder: str | Path) -> bool:
        """Take over a finished run that trained exactly what this trainer would: the same method and options,
        training config, task and backbone (``folder``: another run's folder, e.g. an earlier lesson's). Then its
        files are copied into this trainer's run folder, and ``fit(resume=True)`` scores it without training a step;
        otherwise nothing changes. Returns whether the run was adopted."""
        folder = Path(folder)
        source = RunFolder(folder)
        if self.run is None or folder.resolve() == self.run.path.resolve() or not source.checkpoint.is_file() \
                or not (folder / "config.json").is_file():
            return False
        mine = run_config(self.method, self.backbone, self.task, self.config, self.lr, self.extra_config)
        theirs = read_json(folder / "config.json")
        for record in (mine, theirs):
            record["train"] = {k: v for k, v in record.get("train", {}).items() if k != "progress"}
        if theirs != mine:
            return False
        try:
            state = source.load_checkpoint(run_identity(self.config, self.method), self.backbone.device)
        except ValueError:  # the checkpoint is of another run than its config.json says: not this one
            return False
        if state["step"] < self.config.steps:
            return False
        if self.main:
            shutil.rmtree(self.run.path, ignore_errors=True)
            shutil.copytree(folder, self.run.path)
        self.accelerator.wait_for_everyone()
        return True

    def _finish(self) -> FitResult:
        """Restore the best state, score validation and test once, and write the results."""
        scores, history = self.selection.finish(), pd.DataFrame(self.history)
        metrics = run_metrics(self.method, self.backbone, self.task, history, steps=self.step, lr=self.lr,
                              best_step=self.selection.best["step"], selected_on=self.config.eval_split, **scores)
        if self.run is not None and self.main:
            self.run.write_results(history, metrics, self.method, self.backbone.name)
        self.accelerator.wait_for_everyone()
        return FitResult(history=history, metrics=metrics, run_dir=self.run_dir)

    def _open(self, resume: bool) -> None:
        """Write config.json and run_info.json (the main process); resuming, every process loads the checkpoint."""
        resuming = resume and self.run.checkpoint.is_file()
        if self.main:
            self.run.open(run_config(self.method, self.backbone, self.task, self.config, self.lr, self.extra_config),
                          run_environment(self.config, self.backbone, self.accelerator), resume)
        self.accelerator.wait_for_everyone()
        if resuming:
            self.load_state_dict(self.run.load_checkpoint(run_identity(self.config, self.method), self.backbone.device))

    def _save(self) -> None:
        if self.run is not None and self.main:
            self.run.save_checkpoint(self.state_dict())

    def state_dict(self) -> dict:
        """Everything a resume needs: tensors and plain data only (read back with weights_only=True)."""
        return {"step": self.step, "method": self.method.state_dict(), **self.optimiser.state_dict(),
                "history": self.history, **self.selection.state_dict(), **run_identity(self.config, self.method)}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.optimiser.load_state_dict(state)
        self.step, self.history = state["step"], state["history"]
        self.selection.load_state_dict(state)


POSTFIX = ("loss", "eval_accuracy", "eval_loss")  # what the progress bar shows of a step's record


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
