"""Losses and scores computed only where they are needed.

Classification is rank classification with a verbaliser: the score of class c is
``log p(label word c | prompt)``. When every label word is one token the log-normaliser is shared
by all classes, so the class softmax needs only the label rows of the LM head at the answer
position (``h @ W[label_ids]ᵀ``); words of several tokens are scored as sequences, summing full-
vocabulary log-probabilities at just their own positions. Generation uses the token loss on
target positions only. The LM head never runs over every position.

Every batch is checked once, here, before a method sees it (``check_batch``): methods trust their input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lopt_core.data.batching import check_context, check_right_padded, last_positions, pad, pad_id
from lopt_core.data.task import Verbalizer
from lopt_core.model.backbone import Backbone

__all__ = ["check_batch", "hidden_states", "label_logits", "class_scores", "sequence_scores", "target_loss",
           "loss_terms", "loss_and_scores", "last_positions", "content_free_probs", "calibrated"]


def check_batch(method, backbone: Backbone, batch: dict) -> None:
    """Refuse a batch a method cannot take: padding that is not all on the right, or rows that with the
    method's ``extra_positions`` need more than the backbone's context. Whoever hands a batch to a method
    (this module, ``decoding.prefill``) calls it once."""
    mask = batch["attention_mask"]  # (B, T)
    check_right_padded(mask)
    check_context(backbone, mask, method.extra_positions, f"the batch for {method.name}")


def hidden_states(method, backbone: Backbone, batch: dict) -> torch.Tensor:
    """``method.hidden_states`` (B, T, d) of a batch, checked first (``check_batch``)."""
    check_batch(method, backbone, batch)
    return method.hidden_states(backbone, batch)


def label_logits(backbone: Backbone, h_last: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """The LM head's logits for ``token_ids`` only, from final hidden states (B, d) → (B, C): the label rows
    of the head, its bias and the model's final softcap, exactly what the full head would give there."""
    ids = torch.tensor(token_ids, device=h_last.device)
    head = backbone.model.get_output_embeddings()
    logits = h_last @ head.weight[ids].T.to(h_last.dtype)  # (B, C)
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[ids].to(logits.dtype)
    return backbone.softcap(logits)


def class_scores(method, backbone: Backbone, batch: dict, verbalizer: Verbalizer) -> torch.Tensor:
    """Class scores (B, C) of a right-padded batch; their softmax over classes is p(class | prompt)."""
    if verbalizer.single_token:
        h = hidden_states(method, backbone, batch)  # (B, T, d)
        rows = torch.arange(h.shape[0], device=h.device)
        h_last = h[rows, last_positions(batch["attention_mask"])]  # (B, d)
        return label_logits(backbone, h_last, [seq[0] for seq in verbalizer.token_ids])
    return sequence_scores(method, backbone, batch, verbalizer)


def sequence_scores(method, backbone: Backbone, batch: dict, verbalizer: Verbalizer) -> torch.Tensor:
    """Class scores (B, C) as sum of log p over each label word's tokens (any length).

    The batch is expanded to B·C rows ``[prompt; label word c]``; the LM head runs only at the
    positions that predict label tokens.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    B, C = ids.shape[0], len(verbalizer.token_ids)
    lengths = (last_positions(mask) + 1).tolist()
    seqs, prompts, rows, pos, targets = [], [], [], [], []
    for i in range(B):
        for c, word in enumerate(verbalizer.token_ids):
            row, n = i * C + c, lengths[i]  # row i·C + c of the expanded batch: prompt i + word c
            seqs.append(ids[i, :n].tolist() + list(word))
            prompts.append([1] * n + [0] * len(word))
            for j, tok in enumerate(word):  # hidden at n-1+j predicts token j of the word
                rows.append(row)
                pos.append(n - 1 + j)
                targets.append(tok)
    new_ids, new_mask = pad(seqs, pad_id(backbone.tokenizer), "right", ids.device)
    prompt_mask, _ = pad(prompts, 0, "right", ids.device)
    expanded = {**batch, "input_ids": new_ids, "attention_mask": new_mask, "prompt_mask": prompt_mask}
    h = hidden_states(method, backbone, expanded)  # (B·C, W, d)
    rows_t = torch.tensor(rows, device=h.device)
    logp = F.log_softmax(backbone.logits(h[rows_t, torch.tensor(pos, device=h.device)]).float(), dim=-1)
    token_logp = logp[torch.arange(len(targets), device=h.device), torch.tensor(targets, device=h.device)]
    scores = torch.zeros(B * C, device=h.device, dtype=token_logp.dtype).index_add(0, rows_t, token_logp)
    return scores.view(B, C)


def target_loss(method, backbone: Backbone, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Token cross-entropy over target positions only (generation tasks): their mean, or their sum."""
    h = hidden_states(method, backbone, batch)  # (B, T, d)
    predict = batch["target_mask"][:, 1:].bool()  # position t-1 predicts token t
    logits = backbone.logits(h[:, :-1][predict])  # (N, V): only the target positions
    return F.cross_entropy(logits.float(), batch["input_ids"][:, 1:][predict], reduction=reduction)


def loss_terms(method, backbone: Backbone, batch: dict, task) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """The summed training loss of a batch, what it is summed over (rows for classification, target tokens
    for generation) and, for classification, the class scores. Summing lets data-parallel training divide
    by the count of the whole global batch."""
    if task.kind == "classification":
        scores = class_scores(method, backbone, batch, task.verbalizer(backbone.tokenizer))
        return F.cross_entropy(scores.float(), batch["labels"], reduction="sum"), len(batch["labels"]), scores
    return target_loss(method, backbone, batch, reduction="sum"), int(batch["target_mask"][:, 1:].sum()), None


def loss_and_scores(method, backbone: Backbone, batch: dict, task) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mean training loss of a batch of ``task`` and, for classification, the class scores."""
    total, count, scores = loss_terms(method, backbone, batch, task)
    return total / max(count, 1), scores


# ------------------------------------------------------------------------------ contextual calibration
CONTENT_FREE = ("N/A",)


@torch.no_grad()
def content_free_probs(method, backbone: Backbone, task, texts=CONTENT_FREE) -> torch.Tensor:
    """p(class | template filled with a content-free text) (C,), averaged over ``texts`` (Zhao et al., 2021).

    Every text field of the template gets the same content-free text ("N/A"). The empty string is not one:
    empty text is refused everywhere in the kit, so a calibration cannot quietly read padding."""
    texts = (texts,) if isinstance(texts, str) else tuple(texts)
    if not texts:
        raise ValueError("give at least one content-free text, e.g. 'N/A'")
    for text in texts:
        if not str(text).strip():
            raise ValueError(f"content-free text {text!r} is empty; use a text that carries no content, "
                             "such as 'N/A' (Zhao et al. also use '[MASK]')")
    rows = [{**{f: text for f in task.fields}, "label": 0} for text in texts]
    batch = task.collate(rows, backbone.tokenizer, backbone=backbone, method=method)
    batch = {key: value.to(backbone.device) for key, value in batch.items()}
    with backbone.autocast():
        scores = class_scores(method, backbone, batch, task.verbalizer(backbone.tokenizer))
    return scores.float().softmax(-1).mean(0)  # (C,)


def calibrated(scores: torch.Tensor, p_content_free: torch.Tensor) -> torch.Tensor:
    """Class log-probabilities with the content-free input's preference divided out: softmax(scores) / p_cf,
    renormalised (contextual calibration with W = diag(p_cf)⁻¹, b = 0). (B, C) → (B, C)"""
    return F.log_softmax(F.log_softmax(scores.float(), dim=-1) - p_content_free.log().to(scores.device), dim=-1)
