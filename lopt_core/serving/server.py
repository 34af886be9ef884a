"""Serving trained prompts: each task's prompt K/V is computed once and reused for every request,
and one batch can hold requests for different tasks.

A soft prompt (prompt tuning, LoPT) comes first in the sequence and, under causal attention, never
depends on the text after it; its keys and values at every layer are therefore the same for every
request. ``Server`` computes them once per task (``method.prompt_kv``) and starts each request from
them, so a request costs what the bare backbone costs on its own tokens, plus attention over n cached
positions. Prefixes are already K/V. Rows of one batch may use different tasks (prompts of different
lengths are left-padded inside the cache and masked); requests are scored with the same label scorer
as training (``scoring.label_logits``) and continued with the same decoder (``generation.decode``).

Requests that do not fit the backbone's context (with their task's prompt and the tokens to generate)
are refused with an error naming the request; empty requests too. Nothing is cut silently.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lopt_core.data.batching import check_text, pad, pad_id
from lopt_core.evaluation.decoding import DecodeConfig, decode
from lopt_core.evaluation.scoring import class_scores, label_logits
from lopt_core.methods import CachedPrompt
from lopt_core.model.backbone import Backbone
from lopt_core.model.kv import new_cache


@dataclass
class TaskPrompt:
    """One task's cached prompt (per-layer K, V, each (n_kv, n, head_dim)) and its task."""

    name: str
    prompt: CachedPrompt
    task: object
    method: object = None

    @property
    def length(self) -> int:
        return self.prompt.length


class Server:
    """Many tasks on one frozen backbone: ``classify`` and ``generate`` take (task, prompt) requests."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.prompts: dict[str, TaskPrompt] = {}

    def add(self, name: str, method, task) -> TaskPrompt:
        """Register a trained method for a task; its K/V are computed here, once, in the dtype requests run in."""
        method.eval()
        entry = TaskPrompt(name, method.prompt_kv(self.backbone), task, method=method)
        self.prompts[name] = entry
        return entry

    # ------------------------------------------------------------------------------- batching
    def _encode(self, requests: list[tuple[str, str]], new_tokens: int = 0) -> list[list[int]]:
        unknown = sorted({t for t, _ in requests} - set(self.prompts))
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; served tasks: {sorted(self.prompts)}")
        if not requests:
            raise ValueError("no requests: give at least one (task, text) pair")
        tok, context = self.backbone.tokenizer, self.backbone.context_length
        seqs = []
        for i, (task, text) in enumerate(requests):
            ids = tok(check_text(text, f"request {i} ({task!r})"))["input_ids"]
            entry = self.prompts[task]
            if entry.prompt.includes_bos and ids[:1] == [tok.bos_token_id]:
                ids = ids[1:]  # BOS is already inside the cached prompt
            if not ids:
                raise ValueError(f"request {i} ({task!r}) holds no token after BOS: give it some text")
            total = entry.length + len(ids) + new_tokens
            if context is not None and total > context:
                raise ValueError(f"request {i} ({task!r}) needs {total} positions ({entry.length} of its task's "
                                 f"prompt, "
                                 f"{len(ids)} of text, {new_tokens} to generate); {self.backbone.name} has "
                                 f"{context}. Shorten the text or ask for fewer new tokens.")
            seqs.append(ids)
        return seqs

    def cache_for(self, tasks: list[str]):
        """A fresh cache whose row i holds task i's prompt (left-padded to the longest), its mask
        (B, N) and each row's prompt length (B,)."""
        entries = [self.prompts[t] for t in tasks]
        N = max(e.length for e in entries)
        B = len(entries)
        dev, dtype = self.backbone.device, self.backbone.compute_dtype
        mask = torch.zeros((B, N), dtype=torch.long, device=dev)
        for i, e in enumerate(entries):
            mask[i, N - e.length:] = 1
        cache = new_cache()
        for layer in range(self.backbone.num_layers):
            k0, _ = entries[0].prompt.layers[layer]
            K = torch.zeros((B, k0.shape[0], N, k0.shape[2]), dtype=dtype, device=dev)
            V = torch.zeros_like(K)
            for i, e in enumerate(entries):
                k, v = e.prompt.layers[layer]
                K[i, :, N - e.length:] = k
                V[i, :, N - e.length:] = v
            cache.update(K, V, layer)
        lengths = torch.tensor([e.length for e in entries], device=dev)
        return cache, mask, lengths

    def _forward(self, requests: list[tuple[str, str]], new_tokens: int = 0):
        """Requests right-padded after their tasks' cached prompts, through the frozen model.

        Returns (last hidden state of each request (B, d), the cache, its mask, each request's last token)."""
        seqs = self._encode(requests, new_tokens)
        ids, mask = pad(seqs, pad_id(self.backbone.tokenizer), "right", self.backbone.device)
        cache, prompt_mask, lengths = self.cache_for([t for t, _ in requests])
        T = ids.shape[1]
        positions = lengths[:, None] + torch.arange(T, device=lengths.device)  # text continues after the prompt
        full_mask = torch.cat([prompt_mask, mask], 1)
        with self.backbone.autocast():
            h = self.backbone.transformer(input_ids=ids, past_key_values=cache, position_ids=positions,
                                          attention_mask=full_mask, use_cache=True).last_hidden_state
        rows = torch.arange(len(seqs), device=h.device)
        last = mask.sum(1) - 1
        return h[rows, last], cache, full_mask, ids[rows, last]

    # ------------------------------------------------------------------------------- requests
    @torch.inference_mode()
    def classify(self, requests: list[tuple[str, str]]) -> list[dict]:
        """Label probabilities for each (task, prompt text) request, in one forward pass.

        Label words of one token are scored at the answer position (the LM head's label rows only).
        Tasks whose label words have several tokens are scored as sequences with the method's own
        forward pass (no prompt cache: each class needs its own continuation).
        """
        tok = self.backbone.tokenizer
        multi = {t for t, _ in requests
                 if t in self.prompts and not self.prompts[t].task.verbalizer(tok).single_token}
        results: list = [None] * len(requests)
        single = [i for i, (t, _) in enumerate(requests) if t not in multi]
        if single:
            h_last, _, _, _ = self._forward([requests[i] for i in single])
            for row, i in enumerate(single):
                task = self.prompts[requests[i][0]].task
                ids = [s[0] for s in task.verbalizer(tok).token_ids]
                with self.backbone.autocast():
                    logits = label_logits(self.backbone, h_last[row:row + 1], ids)
                results[i] = _answer(requests[i][0], task, logits[0].float().softmax(-1))
        for i, (name, text) in enumerate(requests):
            if name in multi:
                results[i] = self._classify_sequences(name, check_text(text, f"request {i} ({name!r})"))
        return results

    def _classify_sequences(self, name: str, text: str) -> dict:
        entry = self.prompts[name]
        longest = max(len(s) for s in entry.task.verbalizer(self.backbone.tokenizer).token_ids)
        self._encode([(name, text)], new_tokens=longest)  # the label word follows the text: check it fits
        enc = self.backbone.tokenizer([text], return_tensors="pt")
        batch = {key: enc[key].to(self.backbone.device) for key in ("input_ids", "attention_mask")}
        batch["prompt_mask"] = batch["attention_mask"]
        with self.backbone.autocast():
            scores = class_scores(entry.method, self.backbone, batch, entry.task.verbalizer(self.backbone.tokenizer))
        return _answer(name, entry.task, scores[0].float().softmax(-1))

    @torch.inference_mode()
    def generate(self, requests: list[tuple[str, str]], max_new_tokens: int = 40, num_beams: int = 1,
                 banned: tuple[str, ...] = ("\n",), min_new_tokens: int = 0, length_penalty: float = 1.0) -> list[str]:
        """Continue each (task, prompt text) request; rows may belong to different tasks."""
        config = DecodeConfig(max_new_tokens, num_beams, tuple(banned), min_new_tokens, length_penalty)
        _, cache, mask, last = self._forward(requests, new_tokens=max_new_tokens)
        new = decode(self.backbone, cache, mask, last, config)
        return [text.strip() for text in self.backbone.tokenizer.batch_decode(new, skip_special_tokens=True)]


def _answer(name: str, task, probs: torch.Tensor) -> dict:
    return {"task": name, "label": task.label_names[int(probs.argmax())],
            "probabilities": dict(zip(task.label_names, probs.tolist(), strict=True))}
