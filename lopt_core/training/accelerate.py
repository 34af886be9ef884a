"""Accelerate for the trainer: the device each process trains on, mixed precision, gradient accumulation
and data parallelism (``accelerate launch --multi_gpu --num_processes 2 -m lopt_core.cli train ...``;
on CPU the processes talk over gloo).

DDP synchronises gradients through a module's ``forward``, and the methods have none of their own, so
the trainer wraps the method in ``LossModule``, whose forward returns the summed loss of a batch. The
frozen backbone stays off that module: it is neither copied into DDP's buckets nor synchronised.
"""
from __future__ import annotations

import torch
from torch import nn

from lopt_core.evaluation.scoring import loss_terms

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class LossModule(nn.Module):
    """The method's parameters and a forward returning (summed loss, what it is summed over) of a batch."""

    def __init__(self, method: nn.Module, backbone, task):
        super().__init__()
        self.method = method
        self.backbone, self.task = backbone, task  # plain attributes: not submodules

    def forward(self, batch: dict) -> tuple[torch.Tensor, int]:
        total, count, _ = loss_terms(self.method, self.backbone, batch, self.task)
        return total, count


def make_accelerator(backbone, gradient_accumulation: int = 1):
    """An ``Accelerator`` for the backbone's device and precision (fp16 gets loss scaling on CUDA).

    Accelerate keeps one precision per process; a later trainer in the same single process (a notebook,
    a test) that asks for another one resets it, which is safe while nothing runs distributed."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    options = {"cpu": backbone.device.type == "cpu", "mixed_precision": MIXED_PRECISION[backbone.precision],
               "gradient_accumulation_steps": gradient_accumulation}
    try:
        accelerator = Accelerator(**options)
    except ValueError as err:
        if "already been initialized" not in str(err) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = Accelerator(**options)
    if accelerator.device.type != backbone.device.type or (
            backbone.device.index is not None and accelerator.device != backbone.device):
        raise ValueError(f"this process trains on {accelerator.device} but the backbone is on {backbone.device}: "
                         "load it with load_backbone(..., device='auto') (each process of a launch takes its own GPU)")
    return accelerator
