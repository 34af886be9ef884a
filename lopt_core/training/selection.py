"""Validation selects, test reports: during training the selecting split is scored every ``eval_every`` steps
and the best state is kept; after training that state comes back with the metrics that selected it, and the
test split is scored once. Every evaluation is counted by split (test must not be touched while training).
"""
from __future__ import annotations

import copy
import math
from collections import Counter

from lopt_core.evaluation.evaluator import evaluate, selection_score


class Selection:
    """The best state of a run so far (``best``: its score, step and metrics; ``best_state``: its tensors)."""

    def __init__(self, method, backbone, task, config):
        self.method, self.backbone, self.task, self.config = method, backbone, task, config
        self.best, self.best_state = {"score": -math.inf, "step": None}, None
        self.evaluations: Counter = Counter()  # evaluations per split (test: once, after training)

    def due(self, step: int) -> bool:
        """Whether the selecting split is scored after ``step`` (every ``eval_every`` steps, and the last)."""
        c = self.config
        return c.eval_split in self.task.splits and (step % c.eval_every == 0 or step == c.steps)

    def select(self, step: int) -> tuple[dict, bool]:
        """Score the selecting split after ``step`` and keep the method's state if it is the best so far.
        Returns (metrics, whether they improved on the best)."""
        metrics = self.score(self.config.eval_split, self.config.eval_limit)
        if not selection_score(metrics) > self.best["score"]:
            return metrics, False
        self.best = {"score": selection_score(metrics), "step": step, "metrics": metrics}
        self.best_state = copy.deepcopy(self.method.state_dict())
        return metrics, True

    def finish(self) -> dict[str, dict]:
        """Restore the best state; its validation metrics (the selection) and test, scored here, once."""
        c, scores = self.config, {}
        if self.best_state is not None:
            self.method.load_state_dict(self.best_state)
        if c.eval_split in self.task.splits:
            # the best state was scored on these rows when it was selected, and scoring is deterministic
            same_rows = c.final_eval_limit == c.eval_limit and self.best.get("metrics") is not None
            scores["validation"] = (copy.deepcopy(self.best["metrics"]) if same_rows
                                    else self.score(c.eval_split, c.final_eval_limit))
        if c.test_split is not None and c.test_split in self.task.splits:
            scores["test"] = self.score(c.test_split, c.final_eval_limit)
        return scores

    def state_dict(self) -> dict:
        return {"best": self.best, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_state = state["best"], state["best_state"]

    def score(self, split: str, limit: int | None) -> dict:
        """The metrics of the method on the first ``limit`` rows of ``split`` (counted)."""
        self.evaluations[split] += 1
        return evaluate(self.method, self.backbone, self.task, split, limit, self.config.eval_batch_size,
                        self.config.max_length)
