"""Evaluation: the metrics of a method on one split of a task, with the same scorer training uses.

Classification: accuracy and macro-F1 of rank classification; generation: the target-token loss
(and perplexity). Which split a number comes from matters: ``validation`` selects checkpoints and
learning rates, ``test`` is what a table reports (``lopt_core.data.task``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lopt_core.evaluation.decoding import generate
from lopt_core.evaluation.scoring import calibrated, content_free_probs, loss_and_scores
from lopt_core.model.backbone import Backbone


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.inference_mode()
def evaluate(method, backbone: Backbone, task, split: str = "validation", limit: int | None = None,
             batch_size: int = 32, max_length: int = 256, progress: bool = False,
             calibrate: str | Sequence[str] | None = None) -> dict:
    """Metrics of ``method`` on the first ``limit`` rows of a split: accuracy and macro-F1
    (classification) or the target loss (generation).

    ``calibrate`` (classification): contextual calibration with this content-free text (e.g. ``"N/A"``, or
    several, averaged): the class probabilities are divided by those of the content-free input and
    renormalised, which removes the scorer's preference for some label words (Zhao et al., 2021).
    Rows are batched in order of length (less padding); metrics do not depend on the order.
    """
    rows = task.examples(split, limit, expand_references=True)
    rows = sorted(rows, key=lambda r: len(task.prompt(r)) + len(r.get("target", "")))
    policy = task.length_policy(backbone, method, max_length, f"evaluate {task.name}/{split}")
    was_training = method.training
    method.eval()
    p_cf = None
    if calibrate is not None:
        if task.kind != "classification":
            raise ValueError("calibrate= applies to classification tasks (it rescales class probabilities)")
        p_cf = content_free_probs(method, backbone, task, calibrate)
    total_loss, count, preds, golds = 0.0, 0, [], []
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc=f"eval {task.name}/{split}", disable=not progress, leave=False):
        chunk = rows[start:start + batch_size]
        batch = to_device(task.collate(chunk, backbone.tokenizer, policy=policy), backbone.device)
        with backbone.autocast():
            loss, scores = loss_and_scores(method, backbone, batch, task)
        if p_cf is not None:
            scores = calibrated(scores, p_cf)
            loss = F.nll_loss(scores, batch["labels"])
        weight = len(chunk) if scores is not None else int(batch["target_mask"][:, 1:].sum())
        total_loss += float(loss) * weight
        count += weight
        if scores is not None:
            preds += scores.argmax(-1).tolist()
            golds += batch["labels"].tolist()
    method.train(was_training)
    policy.warn()
    out = {"split": split, "n": len(rows), "loss": total_loss / max(count, 1)}
    if task.kind == "classification":
        out["accuracy"] = sum(p == g for p, g in zip(preds, golds, strict=True)) / max(len(golds), 1)
        out["macro_f1"] = macro_f1(preds, golds, task.num_classes)
        if p_cf is not None:
            texts = [calibrate] if isinstance(calibrate, str) else list(calibrate)
            out["calibration"] = {"content_free": texts, "p_content_free": p_cf.tolist()}
    else:
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
        out["target_tokens"] = count
    return out


def macro_f1(preds: list[int], golds: list[int], num_classes: int) -> float:
    scores = []
    for c in range(num_classes):
        tp = sum(p == c and g == c for p, g in zip(preds, golds, strict=True))
        fp = sum(p == c and g != c for p, g in zip(preds, golds, strict=True))
        fn = sum(p != c and g == c for p, g in zip(preds, golds, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / num_classes


def selection_score(metrics: dict) -> float:
    """Higher is better: accuracy for classification, minus the target loss for generation."""
    return metrics["accuracy"] if "accuracy" in metrics else -metrics["loss"]


def run_metrics(method, backbone: Backbone, task, history, *, steps: int, best_step: int | None, lr: float,
                selected_on: str, **scores: dict) -> dict:
    """The metrics of a training run (its metrics.json): what was trained, how it was selected, parameter
    counts, time per step (from ``history``, a DataFrame with ``seconds``), then ``scores`` by split: the
    ``validation`` metrics that selected ``best_step`` on ``selected_on``, and ``test``, the one to report."""
    metric = "accuracy" if task.kind == "classification" else "loss"
    return {"method": method.name, "task": task.name, "backbone": backbone.name,
            "steps": steps, "best_step": best_step, "lr": lr,
            "selection": {"split": selected_on, "metric": metric, "best_step": best_step},
            "split_notes": dict(task.split_notes),
            "trainable_parameters": method.trainable_parameters(),
            "stored_parameters": method.stored_parameters(),
            "seconds_per_step": float(history["seconds"].median()) if len(history) else None, **scores}


# ------------------------------------------------------------------------------ generation
def evaluate_generation(method, backbone: Backbone, task, split: str = "test", limit: int | None = None,
                        num_beams: int = 1, max_new_tokens: int = 60, batch_size: int = 8,
                        progress: bool = False) -> dict:
    """Generate for each source of a generation task and score against all its references:
    corpus BLEU (sacrebleu, multi-reference) and ROUGE-L (rouge-score, best reference), both ×100."""
    from lopt_core.evaluation.metrics import corpus_bleu, rouge_l

    rows = task.examples(split, limit)
    prompts = [task.prompt(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))  # length bucketing: less padding
    ordered = generate(method, backbone, [prompts[i] for i in order], max_new_tokens, num_beams,
                       batch_size=batch_size, progress=progress)
    outputs = [""] * len(rows)
    for i, text in zip(order, ordered, strict=True):
        outputs[i] = text
    references = [r["references"] for r in rows]
    result = {"split": split, "n": len(rows), "num_beams": num_beams, "bleu": corpus_bleu(outputs, references),
              "rouge_l": rouge_l(outputs, references),
              "samples": [{"source": task.prompt(r), "output": o, "references": r["references"]}
                          for r, o in zip(rows[:5], outputs[:5], strict=True)]}
    if rows and "instruction" in rows[0]:
        result.update(instruction_scores(rows, outputs))
    return result


def answer_type(row: dict) -> str:
    """"closed" (exact match) or "free" (ROUGE-L): the row's own field, else short answers are closed."""
    return row.get("answer_type") or ("closed" if len(row["references"][0].split()) <= 3 else "free")


def instruction_scores(rows: list[dict], outputs: list[str]) -> dict:
    """Exact match on closed-form answers, ROUGE-L on free text, and a score per sub-task."""
    from lopt_core.evaluation.metrics import exact_match, rouge_l

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


# ------------------------------------------------------------------------------ a run's history
DYNAMICS = ("grad_norm.", "update_ratio.", "prompt_", "dead_units", "zero_fraction")  # training.dynamics' columns


def read_history(run: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A run's history: the DataFrame itself, or the history.csv of a run folder."""
    if isinstance(run, pd.DataFrame):
        return run
    path = Path(run) / "history.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{run} holds no history.csv: is it a finished run folder?")
    return pd.read_csv(path)


def dynamics_columns(history: pd.DataFrame) -> list[str]:
    """The columns ``training.dynamics`` wrote into a history."""
    return [c for c in history.columns if c.startswith(DYNAMICS)]
