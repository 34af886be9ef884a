"""The training configuration (checked when made) and its learning-rate schedule: linear warmup, then linear
decay to 0 at the last step."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lopt_core.utils import option


@dataclass
class TrainConfig:
    steps: int = option(60, "optimiser steps")
    batch_size: int = option(8, "training rows per step")
    lr: float | None = option(None, "learning rate (default: the method's recommended rate)")
    weight_decay: float | None = option(None, "AdamW weight decay (default: the method's recommended decay, 0 for "
                                              "all but LoPT-1's residual form)")
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
    precondition: float | None = option(None, "δ of a Riemannian-preconditioned step (Zhang & Pilanci, 2024) on the "
                                              "method's factor pairs X = A B: g_A (B Bᵀ + δI)⁻¹, (AᵀA + δI)⁻¹ g_B "
                                              "before AdamW (none: plain AdamW)")
    dynamics: bool = option(True, "record per-step gradient norms, update/weight ratios and prompt statistics in "
                                  "the history (lopt-kit dynamics RUN summarises them)")

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "max_length", "gradient_accumulation"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.precondition is not None and not self.precondition > 0:
            raise ValueError(f"precondition (δ) must be positive, got {self.precondition!r}")
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


def lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``warmup_then_linear`` over ``config.steps``, for every parameter group of a plain torch optimiser
    (the trainer steps it by hand, once per step: Accelerate's wrapper would step it once per process)."""
    warm, total = config.warmup_steps(), config.steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_then_linear(s, warm, total))
