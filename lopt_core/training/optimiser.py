"""The optimiser of a training run: AdamW over the method's parameter groups with the warmup + linear schedule,
stepped under Accelerate (mixed precision, gradient accumulation, data parallelism). With
``TrainConfig.precondition`` (δ) the gradients of a method's factor pairs X = A B are first preconditioned
(Riemannian preconditioning, Zhang & Pilanci 2024): g_A ← g_A (B Bᵀ + δI)⁻¹ and g_B ← (AᵀA + δI)⁻¹ g_B, so that a
step moves X by about −η(G P_B + P_A G) whatever the factors' scales (the update is invariant to A → A M, B → M⁻¹ B
as δ → 0).

The loss of every micro-batch is scaled so that the gradient is the mean over the whole global batch (rows, or
target tokens of generation tasks, over every micro-batch of every process); a step clips and steps only the
parameters it trains, so that an outer step (``training.outer``) can train others on batches of its own.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from lopt_core.training.config import TrainConfig, lr_schedule


class Optimiser:
    """AdamW and its schedule for ``model`` (a ``LossModule``), with Accelerate's ``accelerator``.

    Args:
        groups: the optimiser's parameter groups (torch's idiom), every step's included.
        check: called with each micro-batch's summed loss before its backward (the trainer stops on NaN).
    """

    def __init__(self, accelerator, model: nn.Module, groups: list[dict], backbone, config: TrainConfig,
                 check: Callable[[torch.Tensor], None], pairs: list[tuple[nn.Parameter, nn.Parameter]] = ()):
        self.accelerator, self.backbone, self.config, self.check = accelerator, backbone, config, check
        self.pairs = list(pairs) if config.precondition is not None else []
        self.model = accelerator.prepare(model)  # DDP when there are several processes
        optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.optimizer = accelerator.prepare(optimizer)
        self.scheduler = lr_schedule(optimizer, config)  # stepped by hand: Accelerate's would step once per process

    @property
    def lr(self) -> float:
        """The learning rate of the first group at this step."""
        return self.scheduler.get_last_lr()[0]

    def backward(self, batches: list[dict], accumulate: bool = True) -> tuple[float, int]:
        """Forward and backward of micro-batches, each loss divided by the count of the whole global batch.
        ``accumulate``: the micro-batches of a training step (gradient accumulation: they sync after the last).

        Returns the mean loss over the global batch and this process's tokens (padding excluded)."""
        device, world = self.backbone.device, self.accelerator.num_processes
        counts = [len(b["labels"]) if "labels" in b else int(b["target_mask"][:, 1:].sum()) for b in batches]
        count = int(self.accelerator.reduce(torch.tensor(sum(counts), device=device), "sum"))
        # Accelerate's backward divides by the accumulation steps, and DDP averages over the processes
        scale = self.config.gradient_accumulation * world / count
        summed = torch.zeros((), device=device)
        checkpointing = self.config.gradient_checkpointing
        for batch in batches:
            sync = self.accelerator.accumulate(self.model) if accumulate else nullcontext()
            with sync, self.backbone.autocast(), self.backbone.gradient_checkpointing(checkpointing):
                total, _ = self.model(batch)
                self.check(total)
                self.accelerator.backward(total * scale)
            summed += total.detach()
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        return float(self.accelerator.reduce(summed, "sum")) / count, tokens

    def step(self, params: list[nn.Parameter]) -> float:
        """Precondition (factor pairs, with ``config.precondition``), clip and step ``params`` only (every other
        gradient is dropped: AdamW skips parameters without one), then zero the gradients. Returns the gradient
        norm before clipping."""
        keep = {id(p) for p in params}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in keep:
                    p.grad = None
        for A, B in self.pairs:
            if A.grad is not None and B.grad is not None:
                precondition(A, B, self.config.precondition)
        norm = self.accelerator.clip_grad_norm_([p for p in params if p.grad is not None], self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def schedule(self) -> None:
        """The next training step's learning rate (once per training step, after all its optimiser steps)."""
        self.scheduler.step()

    def state_dict(self) -> dict:
        scaler = self.accelerator.scaler
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])


@torch.no_grad()
def precondition(A: nn.Parameter, B: nn.Parameter, delta: float) -> None:
    """Riemannian preconditioning of the gradients of X = A B (A (n, r), B (r, d)), in place, from the factors'
    values before the step: g_A ← g_A (B Bᵀ + δI)⁻¹, g_B ← (AᵀA + δI)⁻¹ g_B (r × r systems, solved in float64)."""
    a, b = A.detach().double(), B.detach().double()
    eye = torch.eye(a.shape[1], dtype=torch.float64, device=a.device)
    gram_b, gram_a = b @ b.T + delta * eye, a.T @ a + delta * eye  # (r, r) each, symmetric positive definite
    g_a = torch.linalg.solve(gram_b, A.grad.double().T).T  # g_A (B Bᵀ + δI)⁻¹
    g_b = torch.linalg.solve(gram_a, B.grad.double())  # (AᵀA + δI)⁻¹ g_B
    A.grad.copy_(g_a.to(A.grad.dtype))
    B.grad.copy_(g_b.to(B.grad.dtype))
