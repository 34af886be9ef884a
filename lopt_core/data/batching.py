"""One place for padding and lengths: every batch the kit builds (training, evaluation, IAPT's split,
generation, serving) is padded by ``pad`` and fitted to the context by ``LengthPolicy``.

Methods only ever see **right-padded** batches (``check_right_padded`` says so when they do not):
prompts start at column 0, so the answer position is each row's last real token and positions run
0, 1, ... exactly as in training. Decoding wants the opposite layout (every row ending at the same
column); ``left_align`` moves the padding of a filled cache to the front instead of re-running anything.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right",
        device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into ``(ids, mask)``, each (B, longest); ``side`` is where the padding goes."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if not seqs:
        raise ValueError("cannot pad an empty batch")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, span] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def pad_id(tokenizer) -> int:
    """The id padding uses (``load_backbone`` sets pad = EOS for tokenizers that have no pad token)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def check_right_padded(mask: torch.Tensor) -> None:
    """Refuse a batch whose padding is not all at the end of each row (B, T)."""
    lengths = mask.sum(1, keepdim=True)
    expected = torch.arange(mask.shape[1], device=mask.device)[None] < lengths
    if not torch.equal(mask.bool(), expected):
        raise ValueError("the batch is not right-padded: methods read the answer at each row's last real token "
                         "and start positions at 0. Pad on the right (Task.collate and lopt_core.data.batching.pad "
                         "do); generation and serving left-align internally.")


def check_context(backbone, mask: torch.Tensor, extra: int = 0, what: str = "the batch") -> None:
    """Refuse rows that, with the method's ``extra`` positions, need more than the backbone's context (an
    IndexError on GPT-2, a device-side assert on CUDA, silent garbage past a RoPE model's trained range), with an
    error naming the rows, their lengths and the limit. ``mask``: the batch's attention mask (B, T)."""
    context = backbone.context_length
    if context is None:
        return
    needed = mask.sum(1) + extra  # (B,)
    over = (needed > context).nonzero().flatten().tolist()
    if over:
        shown = ", ".join(f"row {i} needs {int(needed[i])}" for i in over[:5]) + (" …" if len(over) > 5 else "")
        raise ValueError(f"{what}: {len(over)} of {mask.shape[0]} rows do not fit {backbone.name}'s context of "
                         f"{context} positions ({shown}, counting {extra} added by the method). Cut the inputs "
                         "first: evaluate, generate and the Trainer do (max_length, "
                         "lopt_core.data.batching.LengthPolicy), "
                         "and Task.collate(..., backbone=backbone, method=method) does.")


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each right-padded row. (B, T) → (B,)"""
    check_right_padded(attention_mask)
    return attention_mask.sum(dim=1) - 1


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real entries (B, T): 0, 1, ... along each row, 0 on padding."""
    return (mask.long().cumsum(1) - 1).clamp_min(0)


def left_align_order(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) column order that moves each row's padding to the front, keeping the real entries in order."""
    T = mask.shape[1]
    key = mask.long() * T + torch.arange(T, device=mask.device)[None]  # pads first, then real, each in order
    return key.argsort(dim=1)


def check_text(text: str, what: str) -> str:
    """A text that must hold something: empty or whitespace-only is an error naming ``what``."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what} is empty: give it some text")
    return text


# ----------------------------------------------------------------------------------------- lengths
def input_limit(backbone, method=None, max_length: int | None = None, new_tokens: int = 0) -> int:
    """Tokens an input may have: the backbone's context minus the method's extra positions and the tokens
    still to generate, and at most ``max_length``."""
    extra = method.extra_positions if method is not None else 0
    context = backbone.context_length
    limit = max_length if max_length is not None else (context or 10**9)
    if context is not None:
        limit = min(limit, context - extra - new_tokens)
    if limit < 2:
        raise ValueError(f"no room for an input: {backbone.name}'s context is {context} positions, the method "
                         f"adds {extra} and {new_tokens} are kept for generation. Use a shorter prompt_len "
                         "or fewer new tokens.")
    return limit


@dataclass
class LengthPolicy:
    """Fits (prompt, target) id lists into ``limit`` tokens, and says once what it cut.

    The prompt keeps its end (the cue the answer follows) and its BOS; the target keeps its start.
    When both do not fit, the target is cut first, down to half the budget, then the prompt is cut
    from the left. A row that cannot keep its BOS, its last prompt token and one target token is an
    error naming the row.
    """

    limit: int
    where: str = "input"
    bos_id: int | None = None  # kept in front when the prompt starts with it
    record: bool = True  # False: cut without keeping a list (a training loop whose rows were checked once)
    cut: list = field(default_factory=list)
    seen: int = 0

    def fit(self, prompt: list[int], target: list[int] = (), row=None) -> tuple[list[int], list[int]]:
        self.seen += 1
        prompt, target = list(prompt), list(target)
        if len(prompt) + len(target) <= self.limit:
            return prompt, target
        head = prompt[:1] if self.bos_id is not None and prompt[:1] == [self.bos_id] else []
        need = len(head) + 1 + (1 if target else 0)
        if self.limit < need:
            raise ValueError(f"{self.where} {self._name(row)} has no room for its prompt: the limit is "
                             f"{self.limit} tokens")
        keep_t = min(len(target), max(self.limit - len(prompt), self.limit // 2, 1 if target else 0))
        keep_p = self.limit - keep_t
        body = prompt[len(head):]
        prompt = head + body[max(0, len(body) - (keep_p - len(head))):]
        if self.record:
            self.cut.append(row if row is not None else self.seen - 1)
        return prompt, target[:keep_t]

    def warn(self) -> None:
        """One warning for everything cut since the last call."""
        if self.cut:
            shown = ", ".join(map(str, self.cut[:5])) + (" …" if len(self.cut) > 5 else "")
            warnings.warn(f"{self.where}: {len(self.cut)} of {self.seen} rows were longer than {self.limit} tokens "
                          f"and were cut (prompt from the left, BOS kept; target from the right): {shown}",
                          stacklevel=3)
            self.cut = []
            self.seen = 0

    @staticmethod
    def _name(row) -> str:
        return f"row {row}" if row is not None else "a row"
