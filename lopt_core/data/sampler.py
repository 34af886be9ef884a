"""The order of training rows: a pure function of (seed, step, rank, world_size), so that resuming is
exact and data parallelism needs no sampler of its own.

Each epoch is a seeded permutation of the rows. With ``group_by_length`` (the default, as HF Trainer's
``group_by_length``) the permutation is cut into mega-batches of ``MEGA`` global batches, each mega-batch
is sorted by length, cut into global batches, and the batches of the epoch are shuffled: a batch holds
rows of similar length (little padding) while the order of batches stays random. Global batches run on
across epoch boundaries; process ``rank`` of ``world_size`` takes its contiguous share of each one.
"""
from __future__ import annotations

from functools import lru_cache

import torch

MEGA = 50  # global batches per mega-batch when grouping by length (HF's megabatch_mult)


def batch_indices(n_rows: int, batch_size: int, seed: int, step: int, rank: int = 0, world_size: int = 1,
                  lengths: tuple[int, ...] | None = None) -> list[int]:
    """Row indices of process ``rank``'s batch at ``step`` (``batch_size`` rows per process).

    ``lengths`` (one per row) turns on grouping by length; without it the order is a plain shuffle.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if lengths is not None and len(lengths) != n_rows:
        raise ValueError(f"{len(lengths)} lengths for {n_rows} rows")
    G = batch_size * world_size
    out, pos = [], step * G
    while len(out) < G:
        epoch, offset = divmod(pos, n_rows)
        order = epoch_order(n_rows, G, seed, epoch, lengths)
        take = min(G - len(out), n_rows - offset)
        out += order[offset:offset + take]
        pos += take
    return out[rank * batch_size:(rank + 1) * batch_size]


@lru_cache(maxsize=4)
def epoch_order(n_rows: int, global_batch: int, seed: int, epoch: int,
                lengths: tuple[int, ...] | None = None) -> list[int]:
    """Every row once, in the order of ``epoch`` (cached: the same arguments always give the same list)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n_rows, generator=g).tolist()
    if lengths is None:
        return perm
    mega = MEGA * global_batch
    batches = []
    for start in range(0, n_rows, mega):
        chunk = sorted(perm[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i:i + global_batch] for i in range(0, len(chunk), global_batch)]
    shuffle = torch.randperm(len(batches), generator=g).tolist()
    return [i for b in shuffle for i in batches[b]]


def padding_efficiency(lengths: list[int], batches: list[list[int]]) -> float:
    """Real tokens over computed tokens when each batch is padded to its longest row."""
    real = sum(lengths[i] for b in batches for i in b)
    computed = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    return real / computed if computed else 1.0
