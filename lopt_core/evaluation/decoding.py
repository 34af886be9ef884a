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

from lopt_core.data.batching import LengthPolicy, check_text, input_limit, pad, pad_id, positions
from lopt_core.evaluation.scoring import check_batch
from lopt_core.model.backbone import Backbone
from lopt_core.model.gate import GatedCache
from lopt_core.model.kv import left_align, new_cache


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
    """Run a right-padded batch through the method's forward pass, keeping the cache (checked first:
    ``scoring.check_batch``).

    Returns (cache, mask over the cache's columns, final hidden states (B, T', d))."""
    check_batch(method, backbone, batch)
    inputs = method.model_inputs(backbone, batch)
    inputs.setdefault("past_key_values", new_cache())
    out = backbone.transformer(**inputs, use_cache=True)
    return out.past_key_values, inputs["attention_mask"], out.last_hidden_state


def decode(backbone: Backbone, cache, mask: torch.Tensor, last_ids: torch.Tensor,
           config: DecodeConfig = DecodeConfig(), last_embeds: torch.Tensor | None = None) -> list[list[int]]:
    """Continue every row of a filled cache; returns each row's new token ids (up to and with EOS).

    ``mask`` (B, C) marks the cache's real columns (any layout: the prefill's right padding, a served
    prompt's left padding); ``last_ids`` (B,) is each row's last token, which is in the cache too: its
    column is dropped and recomputed by ``generate``, so that generate starts from a token, as it must.
    ``last_embeds`` (B, d): the embedding that token had in the prefill (``PromptMethod.token_embeddings``), which
    the recomputation starts from (its id's own embedding when not given): a method that changes the text's
    embeddings (DePT) keeps its change there.
    """
    tok = backbone.tokenizer
    cache, mask = left_align(cache, mask, drop_last=1, repeat=config.num_beams)
    B = mask.shape[0]
    input_ids = torch.full((B, mask.shape[1] + 1), pad_id(tok), dtype=torch.long, device=mask.device)
    input_ids[:, -1] = last_ids
    if last_embeds is None:
        last_embeds = backbone.embed(last_ids)
    embeds = last_embeds.new_zeros(*input_ids.shape, last_embeds.shape[-1])  # generate reads its last column only:
    embeds[:, -1] = last_embeds  # the columns before it are in the cache
    attention_mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
    counted = cache.ungated(attention_mask, config.num_beams) if isinstance(cache, GatedCache) else attention_mask
    with backbone.autocast():
        out = backbone.model.generate(
            input_ids=input_ids, inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions(counted),
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
            rows, ends = torch.arange(len(batch["input_ids"])), batch["attention_mask"].sum(1) - 1
            with backbone.autocast():
                cache, mask, _ = prefill(method, backbone, batch)
                last_embeds = method.token_embeddings(backbone, batch)[rows, ends]
            outputs += decode(backbone, cache, mask, batch["input_ids"][rows, ends], config, last_embeds)
    finally:
        method.train(was_training)
    policy.warn()
    return outputs
