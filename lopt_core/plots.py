"""Figures for the notebooks: each function takes data (and an optional ``ax``) and returns the
Figure; ``save`` writes it as PNG. seaborn styling, labelled axes, readable at notebook width."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from lopt_core.utils import atomic_path

sns.set_theme(style="whitegrid", context="notebook")


def _axes(ax, size=(6.4, 4.0)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (atomically) and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def loss_curves(histories: dict[str, pd.DataFrame], smooth: int = 5, ax=None):
    """Training loss per step (rolling mean over ``smooth`` steps) for several runs."""
    fig, ax = _axes(ax)
    for label, h in histories.items():
        ax.plot(h["step"], h["loss"].rolling(smooth, min_periods=1).mean(), label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss (rolling mean of {smooth})")
    ax.set_title("Training loss")
    ax.legend()
    return fig


def accuracy_vs_parameters(table: pd.DataFrame, baseline: float | None = None, ax=None,
                           x="trainable_parameters", y="accuracy", label="method", err: str | None = None):
    """Accuracy against trainable parameters (log x), one labelled point per row; an optional
    horizontal ``baseline`` (e.g. zero-shot accuracy) and error bars from column ``err``."""
    fig, ax = _axes(ax)
    for i, (_, row) in enumerate(table.iterrows()):
        yerr = row[err] if err and pd.notna(row[err]) else None
        ax.errorbar(row[x], row[y], yerr=yerr, fmt="o", ms=9, capsize=4, color=f"C{i}")
        ax.annotate(str(row[label]), (row[x], row[y]), textcoords="offset points", xytext=(7, 5), fontsize=10)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label=f"zero-shot ({baseline:.3f})")
        ax.legend(loc="best")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"dev {y}")
    ax.set_title("Accuracy against parameter budget")
    return fig


def embedding_norms(norms: np.ndarray, marks: dict[str, float] | None = None, ax=None):
    """Histogram of embedding-row norms, with vertical marks (e.g. a soft prompt's mean norm)."""
    fig, ax = _axes(ax)
    ax.hist(norms, bins=60, color="tab:blue", alpha=0.8)
    for i, (name, value) in enumerate((marks or {}).items()):
        ax.axvline(value, color=f"C{i + 1}", linestyle="--", label=f"{name}: {value:.2f}")
    ax.set_xlabel("L2 norm of an embedding row")
    ax.set_ylabel("number of tokens")
    ax.set_title("Token embedding norms")
    if marks:
        ax.legend()
    return fig


def label_probabilities(probs: np.ndarray, labels: list[str], gold: np.ndarray, ax=None):
    """Distribution of p(correct label) over examples: how confident the model is."""
    fig, ax = _axes(ax)
    p_gold = probs[np.arange(len(gold)), gold]
    ax.hist(p_gold, bins=20, range=(0, 1), color="tab:green", alpha=0.8)
    ax.axvline(1 / len(labels), color="k", linestyle=":", label="chance")
    ax.set_xlabel("probability of the correct label")
    ax.set_ylabel("examples")
    ax.set_title("Zero-shot confidence on the correct label")
    ax.legend()
    return fig
