"""Serving trained prompts: each task's prompt K/V is computed once and reused for every request,
and one batch can hold requests for different tasks.

A soft prompt (prompt tuning, LoPT) comes first in the sequence and, under causal attention, never
depends on the text after it; its keys and values at every layer are therefore the same for every
request. ``Server`` computes them once per task (``method.prompt_kv``) and starts each request from
them, so a request costs what the bare backbone costs on its own tokens, plus attention over n cached
positions. Prefixes are already K/V. Rows of one batch may use different tasks (prompts of different
lengths are left-padded inside the cache and masked).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from lopt_core.backbone import Backbone
from lopt_core.generation import banned_token_ids


@dataclass
class TaskPrompt:
    """One task's cached prompt: per-layer (K, V), each (n_kv, n, head_dim), plus its task."""

    name: str
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    task: object
    drops_bos: bool
    method: object = None

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[1]


class Server:
    """Many tasks on one frozen backbone: ``classify`` and ``generate`` take (task, prompt) requests."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.prompts: dict[str, TaskPrompt] = {}

    def add(self, name: str, method, task) -> TaskPrompt:
        """Register a trained method for a task; its K/V are computed here, once."""
        method.eval()
        entry = TaskPrompt(name, method.prompt_kv(self.backbone), task,
                           drops_bos=method.prompt_kv_includes_bos(self.backbone), method=method)
        self.prompts[name] = entry
        return entry

    # ------------------------------------------------------------------------------- batching
    def _encode(self, requests: list[tuple[str, str]], padding_side: str) -> dict:
        unknown = sorted({t for t, _ in requests} - set(self.prompts))
        if unknown:
            raise KeyError(f"unknown task(s) {unknown}; served tasks: {sorted(self.prompts)}")
        tok, dev = self.backbone.tokenizer, self.backbone.device
        seqs = []
        for task, text in requests:
            ids = tok(text)["input_ids"]
            if self.prompts[task].drops_bos and ids[:1] == [tok.bos_token_id]:
                ids = ids[1:]  # BOS is already inside the cached prompt
            seqs.append(ids)
        width, B = max(len(s) for s in seqs), len(seqs)
        ids = torch.full((B, width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, width), dtype=torch.long)
        for i, s in enumerate(seqs):
            span = slice(0, len(s)) if padding_side == "right" else slice(width - len(s), width)
            ids[i, span] = torch.tensor(s)
            mask[i, span] = 1
        return {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}

    def cache_for(self, tasks: list[str], repeat: int = 1) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """A fresh cache whose row i holds task i's prompt (left-padded to the longest), its mask
        (B, N) and each row's prompt length (B,)."""
        entries = [self.prompts[t] for t in tasks]
        N = max(e.length for e in entries)
        B = len(entries)
        dev, dtype = self.backbone.device, self.backbone.dtype
        mask = torch.zeros((B, N), dtype=torch.long, device=dev)
        for i, e in enumerate(entries):
            mask[i, N - e.length:] = 1
        cache = DynamicCache(config=self.backbone.config)
        for layer in range(self.backbone.num_layers):
            k0, _ = entries[0].layers[layer]
            K = torch.zeros((B, k0.shape[0], N, k0.shape[2]), dtype=dtype, device=dev)
            V = torch.zeros_like(K)
            for i, e in enumerate(entries):
                k, v = e.layers[layer]
                K[i, :, N - e.length:] = k
                V[i, :, N - e.length:] = v
            if repeat > 1:
                K, V = K.repeat_interleave(repeat, 0), V.repeat_interleave(repeat, 0)
            cache.update(K, V, layer)
        lengths = torch.tensor([e.length for e in entries], device=dev)
        return cache, mask, lengths

    # ------------------------------------------------------------------------------- requests
    @torch.inference_mode()
    def classify(self, requests: list[tuple[str, str]]) -> list[dict]:
        """Label probabilities for each (task, prompt text) request, in one forward pass.

        Label words of one token are scored at the answer position (the LM head's label rows only).
        Tasks whose label words have several tokens are scored as sequences with the method's own
        forward pass (no prompt cache: each class needs its own continuation).
        """
        multi = {t for t, _ in requests
                 if t in self.prompts and not self.prompts[t].task.verbalizer(self.backbone.tokenizer).single_token}
        if multi:
            single = [(i, r) for i, r in enumerate(requests) if r[0] not in multi]
            results: list = [None] * len(requests)
            for i, res in zip([i for i, _ in single], self.classify([r for _, r in single]) if single else []):
                results[i] = res
            for i, (name, text) in enumerate(requests):
                if name in multi:
                    results[i] = self._classify_sequences(name, text)
            return results
        tasks = [t for t, _ in requests]
        batch = self._encode(requests, "right")
        cache, prompt_mask, lengths = self.cache_for(tasks)
        T = batch["input_ids"].shape[1]
        positions = lengths[:, None] + torch.arange(T, device=lengths.device)  # text continues after the prompt
        with self.backbone.autocast():
            h = self.backbone.transformer(input_ids=batch["input_ids"], past_key_values=cache, position_ids=positions,
                                          attention_mask=torch.cat([prompt_mask, batch["attention_mask"]], 1)
                                          ).last_hidden_state
        last = h[torch.arange(len(requests), device=h.device), batch["attention_mask"].sum(1) - 1]  # (B, d)
        results = []
        for i, (name, _) in enumerate(requests):
            task = self.prompts[name].task
            verbalizer = task.verbalizer(self.backbone.tokenizer)
            ids = torch.tensor([s[0] for s in verbalizer.token_ids], device=h.device)
            logits = self.backbone.logits(last[i:i + 1]).float()[0, ids]
            results.append(_answer(name, task, logits.softmax(-1)))
        return results

    def _classify_sequences(self, name: str, text: str) -> dict:
        from lopt_core.scoring import class_scores

        entry = self.prompts[name]
        enc = self.backbone.tokenizer([text], return_tensors="pt")
        batch = {k: v.to(self.backbone.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        batch["prompt_mask"] = batch["attention_mask"]
        with self.backbone.autocast():
            scores = class_scores(entry.method, self.backbone, batch, entry.task.verbalizer(self.backbone.tokenizer))
        return _answer(name, entry.task, scores[0].float().softmax(-1))

    @torch.inference_mode()
    def generate(self, requests: list[tuple[str, str]], max_new_tokens: int = 40, num_beams: int = 1,
                 banned: tuple[str, ...] = ("\n",), min_new_tokens: int = 0) -> list[str]:
        """Continue each (task, prompt text) request; rows may belong to different tasks."""
        tok = self.backbone.tokenizer
        batch = self._encode(requests, "left")
        cache, prompt_mask, _ = self.cache_for([t for t, _ in requests], repeat=num_beams)
        with self.backbone.autocast():
            out = self.backbone.model.generate(
                input_ids=batch["input_ids"], attention_mask=torch.cat([prompt_mask, batch["attention_mask"]], 1),
                past_key_values=cache, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                num_beams=num_beams, do_sample=False,
                suppress_tokens=banned_token_ids(self.backbone, banned) if banned else None,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        return [text.strip() for text in tok.batch_decode(new, skip_special_tokens=True)]


def _answer(name: str, task, probs: torch.Tensor) -> dict:
    return {"task": name, "label": task.label_names[int(probs.argmax())],
            "probabilities": dict(zip(task.label_names, probs.tolist()))}
