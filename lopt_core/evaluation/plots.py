"""Figures for the notebooks: each function takes data (and an optional ``ax``) and returns the
Figure; ``save`` writes it as PNG. seaborn styling, labelled axes, readable at notebook width; a label that starts
with a method's registry key shows the method's title instead ("lopt1 (r=2)" as "LoPT-1 (r=2)")."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from lopt_core.methods import readable
from lopt_core.utils import atomic_path

sns.set_theme(style="whitegrid", context="notebook")


def _axes(ax, size=(6.4, 4.0)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
    return ax.figure, ax


def _ylabel(split: str, y: str) -> str:
    """"test accuracy" for y="accuracy" or y="test_accuracy" alike."""
    words = y.replace("_", " ")
    return words if words.startswith(split) else f"{split} {words}"


def _baseline(ax, value: float) -> None:
    ax.axhline(value, color="grey", linestyle=":", label=f"zero-shot ({value:.3f})")


def _parameter_axis(ax, values=None) -> None:
    """Log-scale x axis of parameter counts, labelled in plain numbers (1,192 not 10^3): ticks at 1, 2 and 5 per
    decade, or at the decades alone when ``values`` span more than two (their labels would overlap)."""
    ax.set_xscale("log")
    values = [float(v) for v in (values if values is not None else []) if v and v > 0]
    wide = len(values) > 1 and max(values) / min(values) > 100
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.margins(x=0.12)
    ax.set_xlabel("trainable parameters (log scale)")


def save(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (atomically) and return the path. The image is cropped to what the figure
    draws (``bbox_inches="tight"``), so labels of figures made without a layout engine are not cut off."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return path


def loss_curves(histories: dict[str, pd.DataFrame], smooth: int = 5, ax=None, validation: bool = True,
                chance: float | None = None):
    """Training loss per step (rolling mean over ``smooth`` steps) for several runs; with ``validation``, each
    run's validation loss as points where it was evaluated (the same colour); ``chance``: a horizontal line at the
    loss of a uniform guess (ln C for C classes)."""
    fig, ax = _axes(ax)
    for i, (label, h) in enumerate(histories.items()):
        label = readable(label)
        ax.plot(h["step"], h["loss"].rolling(smooth, min_periods=1).mean(), color=f"C{i}", label=f"{label}: train")
        if validation and "eval_loss" in h and h["eval_loss"].notna().any():
            evaluated = h[h["eval_loss"].notna()]
            ax.plot(evaluated["step"], evaluated["eval_loss"], "o--", color=f"C{i}", ms=6, lw=1,
                    label=f"{label}: validation")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label=f"chance ({chance:.3f})")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss (training: rolling mean of {smooth})")
    ax.set_title("Training and validation loss")
    ax.legend(fontsize=9)
    return fig


def dynamics(run, smooth: int = 1):
    """The training dynamics of one run (a run folder or its history): gradient norm and update/weight ratio of
    each trainable tensor (log scale), and, for an input prompt, its drift from the start and its effective rank
    against the top singular value. Returns the Figure (2 × 2 panels)."""
    from lopt_core.evaluation.evaluator import dynamics_columns, read_history

    h = read_history(run)
    if not dynamics_columns(h):
        raise ValueError("this run recorded no dynamics (TrainConfig(dynamics=False), or made before they existed)")
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), layout="constrained", sharex=True)
    panels = (("grad_norm.", "gradient norm (before clipping)"), ("update_ratio.", "‖Δθ‖ / ‖θ‖ per step"))
    for ax, (prefix, title) in zip(axes[0], panels, strict=True):
        for column in (c for c in h.columns if c.startswith(prefix)):
            ax.plot(h["step"], h[column].rolling(smooth, min_periods=1).mean(), label=column.removeprefix(prefix))
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize="small")
    drift, rank = axes[1]
    if "prompt_drift" in h:
        drift.plot(h["step"], h["prompt_drift"], label="‖X − X_start‖ / ‖X_start‖")
        for column in ("dead_units", "zero_fraction"):
            if column in h:
                drift.plot(h["step"], h[column], linestyle="--", label=column.replace("_", " ") + " (σ)")
        drift.legend(fontsize="small")
        rank.plot(h["step"], h["prompt_erank"], color="C0", label="entropy effective rank")
        rank.set_ylabel("effective rank")
        top = rank.twinx()
        top.plot(h["step"], h["prompt_s1"], color="C1", label="σ₁")
        top.set_ylabel("top singular value σ₁")
        rank.legend(loc="upper left", fontsize="small")
        top.legend(loc="upper right", fontsize="small")
    else:
        for ax in axes[1]:
            ax.text(0.5, 0.5, "no input prompt", ha="center", va="center", transform=ax.transAxes)
    drift.set_title("the prompt's drift from its start")
    rank.set_title("the prompt's spectrum")
    for ax in axes[1]:
        ax.set_xlabel("training step")
    return fig


def accuracy_vs_parameters(table: pd.DataFrame, baseline: float | None = None, ax=None,
                           x="trainable_parameters", y="accuracy", label="method", err: str | None = None,
                           split: str = "test"):
    """Accuracy against trainable parameters (log x), one labelled point per row; an optional
    horizontal ``baseline`` (e.g. zero-shot accuracy) and error bars from column ``err`` (e.g. the 95%
    interval's half-width); ``split`` names where the accuracy was measured."""
    fig, ax = _axes(ax)
    for i, (_, row) in enumerate(table.iterrows()):
        yerr = row[err] if err and pd.notna(row[err]) else None
        ax.errorbar(row[x], row[y], yerr=yerr, fmt="o", ms=9, capsize=4, color=f"C{i}")
        ax.annotate(readable(row[label]), (row[x], row[y]), textcoords="offset points", xytext=(7, 5), fontsize=10)
    _parameter_axis(ax, table[x])
    if baseline is not None:
        _baseline(ax, baseline)
        ax.legend(loc="best")
    if err and table[y].between(0, 1).all():  # an accuracy: intervals of few seeds can pass 0 or 1; the axis cannot
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -0.02), min(high, 1.02))
    ax.set_ylabel(_ylabel(split, y))
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


def label_probabilities(probs: np.ndarray, labels: list[str], gold: np.ndarray, ax=None,
                        calibrated: np.ndarray | None = None, of: int = -1):
    """How the scorer splits the classes: the probability it gives label ``of`` (the last, e.g. "yes", by default),
    one histogram per true class. A scorer that reads the input puts each class on its own side of the decision
    line; one that answers the same label whatever the input puts every class on one side. ``calibrated``: the same
    rows' calibrated probabilities, drawn as outlines."""
    fig, ax = _axes(ax)
    name = labels[of]
    for c, label in enumerate(labels):
        rows = gold == c
        if not rows.any():
            continue
        ax.hist(probs[rows, of], bins=20, range=(0, 1), color=f"C{c}", alpha=0.6, label=f"true {label}")
        if calibrated is not None:
            ax.hist(calibrated[rows, of], bins=20, range=(0, 1), histtype="step", color=f"C{c}", linewidth=2,
                    linestyle="--", label=f"true {label}, calibrated")
    if len(labels) == 2:
        ax.axvline(0.5, color="k", linestyle=":", label="decision line (0.5)")
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # counts of examples
    ax.set_xlabel(f"p({name.strip()}) the scorer gives")
    ax.set_ylabel("examples")
    ax.set_title(f"p({name.strip()}) by true class")
    ax.legend(fontsize=9)
    return fig


def spectrum(spectra: dict[str, np.ndarray], cut: int | None = None, ax=None, normalise: bool = True):
    """Singular values per prompt on a log scale (divided by the largest), with the rank cut marked."""
    fig, ax = _axes(ax)
    for label, s in spectra.items():
        s = np.asarray(s, dtype=float)
        y = s / s[0] if normalise else s
        ax.plot(np.arange(1, len(s) + 1), y, marker="o", ms=4, label=readable(label))
    if cut is not None:
        ax.axvline(cut + 0.5, color="k", linestyle="--", label=f"rank cut r = {cut}")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("index i of the singular value")
    ax.set_ylabel("σ_i / σ_1 (log scale)" if normalise else "σ_i (log scale)")
    ax.set_title("Singular value spectrum")
    ax.legend(fontsize=9)
    return fig


def energy(spectra: dict[str, np.ndarray], threshold: float = 0.9, ax=None):
    """Cumulative energy Σ_{j≤i} σ_j² / Σ σ_j² against i, with the threshold line."""
    fig, ax = _axes(ax)
    for label, s in spectra.items():
        e = np.cumsum(np.asarray(s, dtype=float) ** 2)
        ax.plot(np.arange(1, len(e) + 1), e / e[-1], marker="o", ms=4, label=readable(label))
    ax.axhline(threshold, color="grey", linestyle=":", label=f"{threshold:.0%} of the energy")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("rank r")
    ax.set_ylabel("share of ‖X‖²_F kept")
    ax.set_ylim(0, 1.02)
    ax.set_title("Cumulative energy")
    ax.legend(fontsize=9)
    return fig


def accuracy_vs_rank(table: pd.DataFrame, x: str = "rank", y: str = "accuracy", hue: str = "variant",
                     current: tuple[float, float] | None = None, baseline: float | None = None, ax=None,
                     split: str = "test"):
    """Accuracy against rank (log2 x) for each variant; ``current`` marks one point (the slider's)."""
    fig, ax = _axes(ax)
    for i, (label, part) in enumerate(table.groupby(hue, sort=False)):
        part = part.sort_values(x)
        ax.plot(part[x], part[y], marker="o", label=readable(label), color=f"C{i}")
    if current is not None:
        ax.plot(*current, marker="*", ms=18, color="gold", markeredgecolor="k", label="current", zorder=5)
    if baseline is not None:
        _baseline(ax, baseline)
    ax.set_xscale("log", base=2)
    ranks = sorted(table[x].dropna().unique())  # a tick at each rank trained, labelled as an integer (1, 2, 20)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ranks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{r:g}" for r in ranks]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("rank r (log scale)")
    ax.set_ylabel(_ylabel(split, y))
    ax.set_title("Accuracy against rank")
    ax.legend(fontsize=9)
    return fig


def pareto(table: pd.DataFrame, front: pd.DataFrame, x: str = "trainable_parameters", y: str = "accuracy",
           hue: str = "method", baseline: float | None = None, ax=None, split: str = "test"):
    """Every run as a point (coloured by ``hue``) and the Pareto front as a step line through ringed points
    (the rings keep a front of a single run visible)."""
    fig, ax = _axes(ax, size=(7, 4.4))
    sns.scatterplot(data=table.assign(**{hue: table[hue].map(readable)}), x=x, y=y, hue=hue, style=hue, s=80, ax=ax)
    ax.step(front[x], front[y], where="post", color="k", linewidth=1.2, marker="o", markersize=14,
            markerfacecolor="none", label="Pareto front")
    if baseline is not None:
        _baseline(ax, baseline)
    _parameter_axis(ax, table[x])
    ax.set_ylabel(_ylabel(split, y))
    ax.set_title("Accuracy against parameters, with the Pareto front")
    ax.legend(fontsize=9)
    return fig


def budget_front(cells: pd.DataFrame, front: pd.DataFrame, x: str = "trainable_parameters", y: str = "test_accuracy",
                 low: str = "low", high: str = "high", method: str = "method", chosen_by: str = "validation accuracy",
                 baseline: float | None = None, ax=None):
    """Methods at several budgets: one line per method through its budgets, each point with its interval
    (``low``..``high``), and the rows of ``front`` ringed and joined, drawn at ``y``. Choose the front on validation
    (``analysis.pareto_front(cells, score="validation_accuracy")``: the rows that select) and draw it at test (the
    rows that report): then test chooses nothing; ``chosen_by`` says so in the legend."""
    fig, ax = _axes(ax, size=(7, 4.4))
    for i, (name, part) in enumerate(cells.sort_values(x).groupby(method, sort=False)):
        ax.errorbar(part[x], part[y], yerr=[part[y] - part[low], part[high] - part[y]], fmt="-o", ms=7, capsize=3,
                    color=f"C{i}", label=readable(name), alpha=0.9)
    front = front.sort_values(x)
    ax.plot(front[x], front[y], "k--", lw=1, marker="o", ms=16, mfc="none", label=f"Pareto front (by {chosen_by})")
    if baseline is not None:
        _baseline(ax, baseline)
    _parameter_axis(ax, cells[x])
    if cells[y].between(0, 1).all():  # intervals of few seeds can pass 0 or 1; an accuracy cannot
        bottom, top = ax.get_ylim()
        ax.set_ylim(max(bottom, -0.02), min(top, 1.02))
    ax.set_ylabel(y.replace("_", " "))
    ax.legend(fontsize=8)
    return fig


def heatmap(table: pd.DataFrame, index: str = "prompt_len", columns: str = "rank", values: str = "accuracy",
            ax=None, fmt: str = ".3f"):
    """An n × r grid of ``values`` (mean over repeated runs)."""
    fig, ax = _axes(ax)
    grid = table.pivot_table(index=index, columns=columns, values=values, aggfunc="mean")
    sns.heatmap(grid, annot=True, fmt=fmt, cmap="viridis", ax=ax, cbar_kws={"label": values.replace("_", " ")})
    ax.set_xlabel(f"{columns} r" if columns == "rank" else columns)
    ax.set_ylabel(f"{index} n" if index == "prompt_len" else index)
    ax.set_title(f"{values.replace('_', ' ')} over the grid")
    return fig


def where_parameters_go(layers: int = 4, text: int = 5, n: int = 3, virtual: int = 4):
    """A schematic of where each method's trained numbers enter a frozen decoder: positions left to right,
    the embedding layer at the bottom, one row per decoder layer above it. Coloured cells are trained (or
    generated), grey cells are the frozen model's own computation."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    trained, generated, frozen, token = "#d95f02", "#1b9e77", "#d9d9d9", "#7570b3"

    def cell(ax, x, y, colour, label=None):
        ax.add_patch(plt.Rectangle((x + 0.06, y + 0.06), 0.88, 0.88, color=colour, label=label))

    panels = (("prompt tuning, LoPT-1/2", "n soft tokens X at the input"),
              ("prefix-tuning", "n keys/values at every layer"),
              ("IAPT", "4 tokens per layer, generated from\nthe instruction, after it"))
    for ax, (title, subtitle) in zip(axes, panels, strict=True):
        width = text + (virtual if title == "IAPT" else n)
        for y in range(layers + 1):
            for x in range(width):
                cell(ax, x, y, frozen if y or title.startswith("prompt") else "white")
        ax.set_title(f"{title}\n{subtitle}", fontsize=10)
        ax.set_xlim(0, width)
        ax.set_ylim(0, layers + 1)
        ax.set_xticks([])
        ax.set_yticks([0.5, layers + 0.5], ["embeddings", f"layer {layers}"], fontsize=8)
        ax.grid(False)
        ax.set_xlabel("positions →", fontsize=9)
    for x in range(n):  # prompt tuning: X replaces nothing, it is prepended at the embedding layer
        cell(axes[0], x, 0, trained, "trained" if x == 0 else None)
    for x in range(n):
        for y in range(1, layers + 1):
            cell(axes[1], x, y, trained)
    instruction = 3
    for x in range(instruction, instruction + virtual):
        for y in range(1, layers + 1):
            cell(axes[2], x, y, generated, "generated per input" if (x, y) == (instruction, 1) else None)
    for ax, start in ((axes[0], n), (axes[1], n), (axes[2], 0)):
        for x in range(start, start + (instruction if ax is axes[2] else text)):
            cell(ax, x, 0, token, "text tokens" if ax is axes[0] and x == start else None)
    for x in range(instruction + virtual, instruction + virtual + text - instruction):
        cell(axes[2], x, 0, token)
    for x in range(n, n + text):  # the text's own embeddings in the first two panels
        cell(axes[1], x, 0, token)
    axes[2].annotate("instruction", (instruction / 2, 0.5), ha="center", va="center", fontsize=8, color="white")
    axes[2].annotate("response", (instruction + virtual + (text - instruction) / 2, 0.5), ha="center", va="center",
                     fontsize=8, color="white")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (trained, generated, token, frozen)]
    fig.legend(handles, ["trained", "generated from the input", "text tokens", "frozen model"],
               loc="outside lower center", ncol=4, fontsize=9, frameon=False)
    return fig


def kv_cache(layers, prefix: int, labels: tuple[str, str] = ("prefix: trained, stored",
                                                             "text: computed by the frozen model")):
    """One sequence's key/value cache as a grid, keys and values side by side: one row per layer (the first at
    the bottom), one column per position. ``layers`` holds per layer (K, V), each (n_kv_heads, positions,
    head_dim) (tensors or arrays); its first ``prefix`` positions are drawn orange (``labels[0]``), the rest grey
    (``labels[1]``). A cell's depth is that slot's L2 norm (its n_kv_heads · head_dim numbers) over the largest in
    its panel. The title gives the counts L, n, n_kv, head_dim and W = L·2·n_kv·head_dim, read from the shapes (K's
    and V's head sizes apart where they differ, as in attention with a value head of its own size)."""
    def numpy(t):
        return t.detach().float().cpu().numpy() if hasattr(t, "detach") else np.asarray(t, dtype=float)

    pairs = [(numpy(k), numpy(v)) for k, v in layers]
    L, (heads, positions, head_dim), v_dim = len(pairs), pairs[0][0].shape, pairs[0][1].shape[-1]  # K's and V's
    fig, axes = plt.subplots(1, 2, figsize=(12, 2.2 + 0.14 * L), layout="constrained", sharey=True)
    colours = (plt.get_cmap("Oranges"), plt.get_cmap("Greys"))
    for i, (ax, name) in enumerate(zip(axes, ("keys K", "values V"), strict=True)):
        norms = np.stack([np.linalg.norm(pair[i], axis=(0, 2)) for pair in pairs])  # (L, positions)
        depth = 0.15 + 0.85 * norms / max(norms.max(), 1e-12)  # an all-zero panel stays pale, not NaN
        image = np.where((np.arange(positions) < prefix)[None, :, None], colours[0](depth), colours[1](depth))
        ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest",
                  extent=(-0.5, positions - 0.5, -0.5, L - 0.5))
        ax.axvline(prefix - 0.5, color="k", lw=1)
        ax.grid(False)
        ax.set_title(f"{name}: {heads} head(s) × {(head_dim, v_dim)[i]} numbers per cell", fontsize=10)
        ax.set_xlabel(f"position (0 … {prefix - 1}: prefix, {prefix} … {positions - 1}: text)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set_ylabel("layer")
    width = (f"head_dim = {head_dim}: W = L·2·n_kv·head_dim = {L * 2 * heads * head_dim}" if v_dim == head_dim else
             f"head_dim K {head_dim}, V {v_dim}: W = L·n_kv·(K + V) = {L * heads * (head_dim + v_dim)}")
    fig.suptitle(f"L = {L} layers, n = {prefix} prefix positions, n_kv = {heads}, {width} stored numbers per prefix "
                 "position\n"
                 "colour depth: a cell's norm over the largest in its panel", fontsize=11)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c(0.7)) for c in colours]
    fig.legend(handles, list(labels), loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    return fig
