"""Losses and scores computed only where they are needed.

Classification is rank classification with a verbaliser: the score of class c is
``log p(label word c | prompt)``. When every label word is one token the log-normaliser is shared
by all classes, so the class softmax needs only the label rows of the LM head at the answer
position (``h @ W[label_ids]ᵀ``); words of several tokens are scored as sequences, summing full-
vocabulary log-probabilities at just their own positions. Generation uses the token loss on
target positions only. The LM head never runs over every position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lopt_core.backbone import Backbone
from lopt_core.tasks import Verbalizer


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each right-padded row. (B, T) → (B,)"""
    return attention_mask.sum(dim=1) - 1


def class_scores(method, backbone: Backbone, batch: dict, verbalizer: Verbalizer) -> torch.Tensor:
    """Class scores (B, C); their softmax over classes is p(class | prompt)."""
    if verbalizer.single_token:
        h = method.hidden_states(backbone, batch)  # (B, T, d)
        rows = torch.arange(h.shape[0], device=h.device)
        h_last = h[rows, last_positions(batch["attention_mask"])]  # (B, d)
        ids = torch.tensor([seq[0] for seq in verbalizer.token_ids], device=h.device)
        head = backbone.model.get_output_embeddings()
        logits = h_last @ head.weight[ids].T.to(h_last.dtype)  # (B, C)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[ids]
        cap = getattr(backbone.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits
    return sequence_scores(method, backbone, batch, verbalizer)


def sequence_scores(method, backbone: Backbone, batch: dict, verbalizer: Verbalizer) -> torch.Tensor:
    """Class scores (B, C) as sum of log p over each label word's tokens (any length).

    The batch is expanded to B·C rows ``[prompt; label word c]``; the LM head runs only at the
    positions that predict label tokens.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    B, C = ids.shape[0], len(verbalizer.token_ids)
    lengths = mask.sum(dim=1).tolist()
    width = max(lengths) + max(len(s) for s in verbalizer.token_ids)
    new_ids = torch.zeros((B * C, width), dtype=ids.dtype, device=ids.device)
    new_mask = torch.zeros((B * C, width), dtype=mask.dtype, device=ids.device)
    prompt_mask = torch.zeros_like(new_mask)
    rows, pos, targets = [], [], []
    for i in range(B):
        for c, word in enumerate(verbalizer.token_ids):
            k, n = i * C + c, lengths[i]
            new_ids[k, :n] = ids[i, :n]
            new_ids[k, n:n + len(word)] = torch.tensor(word, device=ids.device)
            new_mask[k, :n + len(word)] = 1
            prompt_mask[k, :n] = 1
            for j, tok in enumerate(word):  # hidden at n-1+j predicts token j of the word
                rows.append(k)
                pos.append(n - 1 + j)
                targets.append(tok)
    expanded = {**batch, "input_ids": new_ids, "attention_mask": new_mask, "prompt_mask": prompt_mask}
    h = method.hidden_states(backbone, expanded)  # (B·C, W, d)
    rows_t = torch.tensor(rows, device=h.device)
    logp = F.log_softmax(backbone.logits(h[rows_t, torch.tensor(pos, device=h.device)]).float(), dim=-1)
    token_logp = logp[torch.arange(len(targets), device=h.device), torch.tensor(targets, device=h.device)]
    scores = torch.zeros(B * C, device=h.device, dtype=token_logp.dtype).index_add(0, rows_t, token_logp)
    return scores.view(B, C)


def target_loss(method, backbone: Backbone, batch: dict) -> torch.Tensor:
    """Mean token cross-entropy over target positions only (generation tasks)."""
    h = method.hidden_states(backbone, batch)  # (B, T, d)
    predict = batch["target_mask"][:, 1:].bool()  # position t-1 predicts token t
    logits = backbone.logits(h[:, :-1][predict])  # (N, V): only the target positions
    return F.cross_entropy(logits.float(), batch["input_ids"][:, 1:][predict])


def loss_and_scores(method, backbone: Backbone, batch: dict, task) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training loss for a batch of ``task`` and, for classification, the class scores."""
    if task.kind == "classification":
        scores = class_scores(method, backbone, batch, task.verbalizer(backbone.tokenizer))
        return F.cross_entropy(scores.float(), batch["labels"]), scores
    return target_loss(method, backbone, batch), None
