"""Bi-level training: parameter groups a method trains apart (``method.outer_groups()``, as IAPT's
``bilevel=True`` asks for) take one optimiser step of their own after each training step, on an ``outer``
split carved from train, so that neither the rows the training step sees nor those that select are seen by it.
"""
from __future__ import annotations

from lopt_core.training.batches import Batches

SPLIT = "outer"
SEED = 7_919  # added to the run's seed: the outer rows are drawn in an order of their own


def carve(task):
    """A copy of ``task`` with an ``outer`` split carved from train (the caller's task stays as it was)."""
    return task.copy().carve(SPLIT, "train")


class OuterStep:
    """After training step ``s``: one micro-batch of min(batch_size, rows) outer rows (micro-step ``s`` of their
    order), its loss in the step's record as ``outer_loss``, and a clipped optimiser step of ``groups`` only.

    ``groups`` sit in the run's ``Optimiser`` after the training step's own (one AdamW, one schedule)."""

    def __init__(self, groups: list[dict], task, backbone, policy, config, rank: int = 0, world: int = 1):
        rows = task.examples(SPLIT, expand_references=True)
        self.params = [p for g in groups for p in g["params"]]
        self.batches = Batches(task, rows, backbone, policy, batch_size=min(config.batch_size, len(rows)),
                               seed=config.seed + SEED, rank=rank, world=world, split=SPLIT)

    def step(self, optimiser, step: int) -> dict:
        """After training step ``step`` (counted from 0; before the schedule moves on): ``{"outer_loss": loss}``."""
        loss, _ = optimiser.backward(self.batches(step), accumulate=False)
        optimiser.step(self.params)
        return {"outer_loss": loss}
