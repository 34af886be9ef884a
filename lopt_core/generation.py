"""Text generation with any method: greedy or beam search, banned tokens, batched; one decoder for
the methods and for serving.

Decoding happens in two parts. **Prefill**: the prompts, right-padded exactly as in training, go
through the method's own forward pass (``method.model_inputs``), which fills a cache: soft prompts,
prefixes and IAPT's generated tokens included. **Decode**: that cache is left-aligned
(``kv.left_align``: every row ends at the same column, padding in front) and transformers'
``generate`` continues from it, greedy or with beams. The first new token therefore comes from the
very computation training scores, and every backbone (absolute or rotary positions, sliding windows,
a tokenizer that adds BOS) sees each row as it would alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from lopt_core.backbone import Backbone
from lopt_core.batching import LengthPolicy, check_text, input_limit, pad, pad_id, positions
from lopt_core.kv import left_align, new_cache


@dataclass(frozen=True)
class DecodeConfig:
    """How to continue a prompt (shared by ``generate`` and ``Server.generate``)."""

    max_new_tokens: int = 40
    num_beams: int = 1  # 1 is greedy decoding; 5 is the prefix-tuning paper's table-to-text setting
    banned: tuple[str, ...] = ("\n",)  # substrings whose tokens may never be generated (the paper bans newlines)
    min_new_tokens: int = 0
    length_penalty: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.min_new_tokens < 0:
            raise ValueError(f"max_new_tokens and num_beams must be >= 1 and min_new_tokens >= 0, got {self}")


_BANNED: dict = {}


def banned_token_ids(backbone: Backbone, substrings: tuple[str, ...] = ("\n",)) -> list[int]:
    """Every vocabulary id whose text contains one of ``substrings`` (e.g. all newline tokens); cached."""
    tok = backbone.tokenizer
    key = (id(tok), backbone.vocab_size, tuple(substrings))
    if key not in _BANNED:
        special = set(tok.all_special_ids)
        _BANNED[key] = [i for i in range(backbone.vocab_size)
                        if i not in special and any(s in tok.decode([i]) for s in substrings)]
    return _BANNED[key]


def prefill(method, backbone: Backbone, batch: dict):
    """Run a right-padded batch through the method's forward pass, keeping the cache.

    Returns (cache, mask over the cache's columns, final hidden states (B, T', d))."""
    inputs = method.model_inputs(backbone, batch)
    inputs.setdefault("past_key_values", new_cache())
    out = backbone.transformer(**inputs, use_cache=True)
    return out.past_key_values, inputs["attention_mask"], out.last_hidden_state


def decode(backbone: Backbone, cache, mask: torch.Tensor, last_ids: torch.Tensor,
           config: DecodeConfig = DecodeConfig()) -> list[list[int]]:
    """Continue every row of a filled cache; returns each row's new token ids (up to and with EOS).

    ``mask`` (B, C) marks the cache's real columns (any layout: the prefill's right padding, a served
    prompt's left padding); ``last_ids`` (B,) is each row's last token, which is in the cache too: its
    column is dropped and recomputed by ``generate``, so that generate starts from a token, as it must.
    """
    tok = backbone.tokenizer
    cache, mask = left_align(cache, mask, drop_last=1, repeat=config.num_beams)
    B = mask.shape[0]
    input_ids = torch.full((B, mask.shape[1] + 1), pad_id(tok), dtype=torch.long, device=mask.device)
    input_ids[:, -1] = last_ids
    attention_mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
    with backbone.autocast():
        out = backbone.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
            past_key_values=cache, max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
            num_beams=config.num_beams, do_sample=False, length_penalty=config.length_penalty,
            suppress_tokens=banned_token_ids(backbone, config.banned) if config.banned else None,
            pad_token_id=pad_id(tok), eos_token_id=tok.eos_token_id)
    rows = []
    for row in out[:, input_ids.shape[1]:].tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id) + 1]
        rows.append(row)
    return rows


def encode_prompts(backbone: Backbone, prompts: list[str], policy: LengthPolicy) -> dict:
    """Right-padded batch of prompt texts (BOS as the tokenizer adds it), each fitted by ``policy``."""
    start = policy.seen
    seqs = [policy.fit(backbone.tokenizer(check_text(p, f"prompt {start + i}"))["input_ids"], (), start + i)[0]
            for i, p in enumerate(prompts)]
    ids, mask = pad(seqs, pad_id(backbone.tokenizer), "right", backbone.device)
    return {"input_ids": ids, "attention_mask": mask, "prompt_mask": mask}


def generate(method, backbone: Backbone, prompts: list[str], max_new_tokens: int = 40, num_beams: int = 1,
             banned: tuple[str, ...] = ("\n",), min_new_tokens: int = 0, batch_size: int = 8,
             length_penalty: float = 1.0, progress: bool = False) -> list[str]:
    """Continue each prompt with ``method`` on ``backbone``; returns the generated texts (stripped).

    Prompts longer than the context allows (the backbone's positions minus the method's and the new
    tokens) are cut from the left, keeping BOS, with one warning per call; empty prompts are an error.
    """
    ids = generate_ids(method, backbone, prompts, max_new_tokens, num_beams, banned, min_new_tokens, batch_size,
                       length_penalty, progress)
    return [text.strip() for text in backbone.tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.inference_mode()
def generate_ids(method, backbone: Backbone, prompts: list[str], max_new_tokens: int = 40, num_beams: int = 1,
                 banned: tuple[str, ...] = ("\n",), min_new_tokens: int = 0, batch_size: int = 8,
                 length_penalty: float = 1.0, progress: bool = False) -> list[list[int]]:
    """Like ``generate`` but returns the new token ids of each prompt (up to and with EOS)."""
    config = DecodeConfig(max_new_tokens, num_beams, tuple(banned), min_new_tokens, length_penalty)
    policy = LengthPolicy(input_limit(backbone, method, new_tokens=max_new_tokens), "generate",
                          backbone.tokenizer.bos_token_id)
    was_training = method.training
    method.eval()
    outputs: list[list[int]] = []
    try:
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
            batch = encode_prompts(backbone, prompts[start:start + batch_size], policy)
            with backbone.autocast():
                cache, mask, _ = prefill(method, backbone, batch)
            last = batch["input_ids"][torch.arange(len(batch["input_ids"])), batch["attention_mask"].sum(1) - 1]
            outputs += decode(backbone, cache, mask, last, config)
    finally:
        method.train(was_training)
    policy.warn()
    return outputs


def evaluate_generation(method, backbone: Backbone, task, split: str = "test", limit: int | None = None,
                        num_beams: int = 1, max_new_tokens: int = 60, batch_size: int = 8,
                        progress: bool = False) -> dict:
    """Generate for each source of a generation task and score against all its references:
    corpus BLEU (sacrebleu, multi-reference) and ROUGE-L (rouge-score, best reference), both ×100."""
    from lopt_core.metrics import corpus_bleu, rouge_l

    rows = task.examples(split, limit)
    prompts = [task.prompt(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))  # length bucketing: less padding
    ordered = generate(method, backbone, [prompts[i] for i in order], max_new_tokens, num_beams,
                       batch_size=batch_size, progress=progress)
    outputs = [""] * len(rows)
    for i, text in zip(order, ordered):
        outputs[i] = text
    references = [r["references"] for r in rows]
    result = {"split": split, "n": len(rows), "num_beams": num_beams, "bleu": corpus_bleu(outputs, references),
              "rouge_l": rouge_l(outputs, references),
              "samples": [{"source": task.prompt(r), "output": o, "references": r["references"]}
                          for r, o in zip(rows[:5], outputs[:5])]}
    if rows and "instruction" in rows[0]:
        result.update(instruction_scores(rows, outputs))
    return result


def answer_type(row: dict) -> str:
    """"closed" (exact match) or "free" (ROUGE-L): the row's own field, else short answers are closed."""
    return row.get("answer_type") or ("closed" if len(row["references"][0].split()) <= 3 else "free")


def instruction_scores(rows: list[dict], outputs: list[str]) -> dict:
    """Exact match on closed-form answers, ROUGE-L on free text, and a score per sub-task."""
    from lopt_core.metrics import exact_match, rouge_l

    closed = [i for i, r in enumerate(rows) if answer_type(r) == "closed"]
    free = [i for i, r in enumerate(rows) if answer_type(r) == "free"]
    out: dict = {}
    if closed:
        out["exact_match"] = exact_match([outputs[i] for i in closed], [rows[i]["references"][0] for i in closed])
    if free:
        out["rouge_l_free"] = rouge_l([outputs[i] for i in free], [rows[i]["references"] for i in free])
    by_task: dict = {}
    for name in sorted({r.get("task", "all") for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.get("task", "all") == name]
        if answer_type(rows[idx[0]]) == "closed":
            score = exact_match([outputs[i] for i in idx], [rows[i]["references"][0] for i in idx])
            by_task[name] = {"metric": "exact_match", "score": score, "n": len(idx)}
        else:
            score = rouge_l([outputs[i] for i in idx], [rows[i]["references"] for i in idx])
            by_task[name] = {"metric": "rouge_l", "score": score / 100, "n": len(idx)}
    out["by_task"] = by_task
    return out
