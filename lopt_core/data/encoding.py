"""A task's rows as token ids: one row's (prompt, target) ids, the length policy for a task, a padded batch.

Functions of a task (``lopt_core.data.task.Task``: its ``kind``, ``prompt``, ``target_template`` and
verbaliser) and a tokenizer; ``Task.encode``, ``Task.collate``, ... are their front. Lengths and padding
are ``lopt_core.data.batching``'s: one ``LengthPolicy`` fits every row, one ``pad`` pads every batch.
"""
from __future__ import annotations

import torch

from lopt_core.data.batching import LengthPolicy, input_limit, pad, pad_id
from lopt_core.data.formats import row_preview


def answer_tokens(task, tokenizer) -> int:
    """Positions scoring adds after a prompt: the longest label word when words have several tokens
    (they are scored as sequences), else none."""
    if task.kind != "classification":
        return 0
    verbalizer = task.verbalizer(tokenizer)
    return 0 if verbalizer.single_token else max(len(ids) for ids in verbalizer.token_ids)


def encode(task, row: dict, tokenizer, policy: LengthPolicy | None = None, index=None) -> tuple[list, list]:
    """Token ids (prompt, target) of one row; the target (generation rows) ends with EOS. With a
    ``policy``, the pair is fitted to its limit (``lopt_core.data.batching.LengthPolicy``)."""
    p = tokenizer(task.prompt(row), add_special_tokens=True)["input_ids"]
    t = []
    if task.kind == "generation" and "target" in row:
        if not str(row["target"]).strip():
            raise ValueError(f"task {task.name!r}: empty target in the row {row_preview(row)}")
        t = tokenizer(task.target_template.format(target=row["target"]), add_special_tokens=False)["input_ids"]
        t = t + [tokenizer.eos_token_id]
    return policy.fit(p, t, index) if policy is not None else (p, t)


def length_policy(task, backbone, method=None, max_length: int = 256, where: str | None = None) -> LengthPolicy:
    """Rows of at most ``max_length`` tokens, and never more than the backbone's context leaves beside the
    method's extra positions (and label words of several tokens, scored after the prompt); longer ones are
    cut (prompt from the left, BOS kept). The one policy of collate, evaluate and the Trainer."""
    limit = input_limit(backbone, method, max_length, new_tokens=answer_tokens(task, backbone.tokenizer))
    return LengthPolicy(limit, where or f"task {task.name!r}", backbone.tokenizer.bos_token_id)


def collate(task, rows: list[dict], tokenizer, max_length: int = 256, policy: LengthPolicy | None = None,
            backbone=None, method=None) -> dict[str, torch.Tensor]:
    """Right-padded batch, each row fitted to ``max_length`` tokens and, given the ``backbone`` (and the
    ``method``), to what its context leaves beside the method's positions (or to ``policy``'s limit; a
    ``policy`` passed in collects what was cut, for one warning per call of its owner).

    Shapes: input_ids, attention_mask, prompt_mask (B, T); labels (B,) for classification;
    target_mask (B, T) marks the target tokens (and EOS) for generation rows with a target.
    """
    own = policy is None
    if own:
        policy = (length_policy(task, backbone, method, max_length) if backbone is not None
                  else LengthPolicy(max_length, where=f"task {task.name!r}", bos_id=tokenizer.bos_token_id))
    pairs = [encode(task, row, tokenizer, policy, i) for i, row in enumerate(rows)]
    if own:
        policy.warn()
    input_ids, attention_mask = pad([p + t for p, t in pairs], pad_id(tokenizer))
    prompt_mask, _ = pad([[1] * len(p) + [0] * len(t) for p, t in pairs], 0)
    target_mask, _ = pad([[0] * len(p) + [1] * len(t) for p, t in pairs], 0)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "prompt_mask": prompt_mask}
    if task.kind == "classification":
        batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    elif any(t for _, t in pairs):
        batch["target_mask"] = target_mask
    return batch
