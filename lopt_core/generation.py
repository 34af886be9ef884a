"""Text generation with any method: greedy or beam search, banned tokens, batched.

Reuses transformers' ``generate``. Each method turns a left-padded batch into ``generate``'s
inputs (``PromptMethod.generation_inputs``): input prompts pass ``inputs_embeds`` with the soft
prompt inside; prefix methods pass ``input_ids`` plus a ``past_key_values`` cache that already
holds the prefix, and an attention mask covering prefix + input. transformers 5 derives position
ids from that mask (cumulative sum), so left padding gives every row the same positions it had in
training (right-padded), and decoding continues from them.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from lopt_core.backbone import Backbone


def banned_token_ids(backbone: Backbone, substrings: tuple[str, ...] = ("\n",)) -> list[int]:
    """Every vocabulary id whose text contains one of ``substrings`` (e.g. all newline tokens)."""
    tok = backbone.tokenizer
    special = set(tok.all_special_ids)
    return [i for i in range(backbone.vocab_size)
            if i not in special and any(s in tok.decode([i]) for s in substrings)]


def generate(method, backbone: Backbone, prompts: list[str], max_new_tokens: int = 40, num_beams: int = 1,
             banned: tuple[str, ...] = ("\n",), min_new_tokens: int = 0, batch_size: int = 8,
             length_penalty: float = 1.0, progress: bool = False) -> list[str]:
    """Continue each prompt with ``method`` on ``backbone``; returns the generated texts (stripped).

    Args:
        num_beams: 1 is greedy decoding; 5 is the prefix-tuning paper's table-to-text setting.
        banned: substrings whose tokens may never be generated (the paper bans newlines).
    """
    ids = generate_ids(method, backbone, prompts, max_new_tokens, num_beams, banned, min_new_tokens, batch_size,
                       length_penalty, progress)
    return [text.strip() for text in backbone.tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.inference_mode()
def generate_ids(method, backbone: Backbone, prompts: list[str], max_new_tokens: int = 40, num_beams: int = 1,
                 banned: tuple[str, ...] = ("\n",), min_new_tokens: int = 0, batch_size: int = 8,
                 length_penalty: float = 1.0, progress: bool = False) -> list[list[int]]:
    """Like ``generate`` but returns the new token ids of each prompt (padding removed)."""
    tok = backbone.tokenizer
    was_training = method.training
    method.eval()
    suppress = banned_token_ids(backbone, banned) if banned else None
    outputs: list[list[int]] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, padding_side="left")
        batch = {"input_ids": enc["input_ids"].to(backbone.device),
                 "attention_mask": enc["attention_mask"].to(backbone.device)}
        batch["prompt_mask"] = batch["attention_mask"]
        inputs = method.generation_inputs(backbone, batch, num_beams)
        with backbone.autocast():
            out = backbone.model.generate(
                **inputs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams,
                do_sample=False, length_penalty=length_penalty, suppress_tokens=suppress,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
        if "input_ids" in inputs:  # with input_ids, generate returns them in front of the new tokens
            out = out[:, inputs["input_ids"].shape[1]:]
        for row in out.tolist():
            while row and row[-1] == tok.pad_token_id:
                row.pop()
            outputs.append(row)
    method.train(was_training)
    return outputs


def evaluate_generation(method, backbone: Backbone, task, split: str = "test", limit: int | None = None,
                        num_beams: int = 1, max_new_tokens: int = 60, batch_size: int = 8,
                        progress: bool = False) -> dict:
    """Generate for each source of a generation task and score against all its references:
    corpus BLEU (sacrebleu, multi-reference) and ROUGE-L (rouge-score, best reference), both ×100."""
    from lopt_core.metrics import corpus_bleu, rouge_l

    rows = task.examples(split, limit)
    prompts = [task.prompt(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))  # length bucketing: less left padding
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
