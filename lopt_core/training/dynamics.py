"""Training dynamics: what each optimiser step did, written beside the loss in history.csv.

Per trainable tensor: its gradient norm before clipping (``grad_norm.<name>``) and its update-to-weight ratio
``‖Δθ‖ / ‖θ‖`` (``update_ratio.<name>``; empty while θ is exactly zero, as a factor that starts at zero). For a
method with an input prompt X (n, d): ``prompt_norm`` ‖X‖_F,
``prompt_drift`` ‖X − X_start‖_F / ‖X_start‖_F, ``prompt_erank`` (entropy effective rank) and the top singular
values ``prompt_s1``…; and what the method reports of itself (``method.diagnostics()``, e.g. LoPT-2's dead units).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from lopt_core.evaluation.evaluator import dynamics_columns, read_history
from lopt_core.evaluation.spectrum import entropy_effective_rank, singular_values

TOP_SINGULAR = 3


class Dynamics:
    """Measures one optimiser step: call ``before_step()`` after backward (gradients present), then
    ``after_step()`` once the optimiser has stepped; each returns columns of the step's history row."""

    def __init__(self, method):
        self.method = method
        self.named = [(name, p) for name, p in method.named_parameters() if p.requires_grad]
        self.start = self._prompt()
        self._weights: list[torch.Tensor] = []

    def _prompt(self) -> torch.Tensor | None:
        if getattr(self.method, "prompt_kind", None) != "input":
            return None
        with torch.no_grad():
            return self.method.input_prompt().detach().float().clone()  # (n, d)

    @torch.no_grad()
    def before_step(self) -> dict[str, float]:
        self._weights = [p.detach().clone() for _, p in self.named]
        return {f"grad_norm.{name}": float(p.grad.norm()) if p.grad is not None else 0.0 for name, p in self.named}

    @torch.no_grad()
    def after_step(self) -> dict[str, float]:
        row = {f"update_ratio.{name}": float((p - w).norm() / w.norm()) if w.norm() > 0 else float("nan")
               for (name, p), w in zip(self.named, self._weights, strict=True)}  # a tensor at zero: no ratio
        X = self._prompt()
        if X is not None:
            s = singular_values(X)
            row.update({"prompt_norm": float(X.norm()),
                        "prompt_drift": float((X - self.start).norm() / self.start.norm().clamp_min(1e-12)),
                        "prompt_erank": entropy_effective_rank(s)})
            row.update({f"prompt_s{i + 1}": float(v) for i, v in enumerate(s[:TOP_SINGULAR])})
        row.update(self.method.diagnostics())
        return row


def summary(run: str | Path | pd.DataFrame) -> pd.DataFrame:
    """One row per dynamics column of a run (folder or history): its first and last value, min, median, max."""
    history = read_history(run)
    columns = dynamics_columns(history)
    if not columns:
        raise ValueError("this run recorded no dynamics (TrainConfig(dynamics=False), or made before 0.2)")
    table = pd.DataFrame({"first": history[columns].iloc[0], "last": history[columns].iloc[-1],
                          "min": history[columns].min(), "median": history[columns].median(),
                          "max": history[columns].max()})
    table.index.name = "quantity"
    return table
