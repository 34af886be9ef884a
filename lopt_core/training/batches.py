"""The rows a run trains on, as device batches.

Every row is fitted to the run's length policy once, before step 1: a row with no room for its prompt is an
error that names it, and the policy counts what will be cut (for one warning). The order of the rows is
``data.sampler.batch_indices``: a function of (seed, micro-step, rank, world size) only, so resuming is exact.
"""
from __future__ import annotations

from lopt_core.data.batching import LengthPolicy
from lopt_core.data.sampler import batch_indices
from lopt_core.evaluation.evaluator import to_device


class Batches:
    """The rows of one split, ``batch_size`` per micro-batch for this process (``rank`` of ``world``) and
    ``accumulation`` micro-batches per optimiser step.

    ``by_length``: batch rows of similar length together (their fitted lengths group the order)."""

    def __init__(self, task, rows: list[dict], backbone, policy: LengthPolicy, *, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, accumulation: int = 1, by_length: bool = False, split: str = "train"):
        self.task, self.rows, self.backbone = task, rows, backbone
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.accumulation = accumulation
        tokenizer = backbone.tokenizer
        lengths = tuple(sum(map(len, task.encode(row, tokenizer, policy, index=i if split == "train" else
                                                 f"{i} of the {split} split"))) for i, row in enumerate(rows))
        self.lengths = lengths if by_length else None
        self.policy = LengthPolicy(policy.limit, policy.where, policy.bos_id, record=False)  # checked: cut quietly

    def indices(self, micro_step: int) -> list[int]:
        """This process's rows of the micro-batch ``micro_step``."""
        return batch_indices(len(self.rows), self.batch_size, self.seed, micro_step, self.rank, self.world,
                             lengths=self.lengths)

    def __call__(self, step: int) -> list[dict]:
        """The micro-batches of optimiser step ``step`` (from 0), collated and on the backbone's device."""
        tokenizer, device = self.backbone.tokenizer, self.backbone.device
        micro_steps = range(step * self.accumulation, (step + 1) * self.accumulation)
        return [to_device(self.task.collate([self.rows[i] for i in self.indices(m)], tokenizer, policy=self.policy),
                          device) for m in micro_steps]
