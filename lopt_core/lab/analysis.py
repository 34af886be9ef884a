"""Pure analysis functions on prompts: spectra, energy, effective rank, truncation, SVD warm
starts, nearest tokens, similarity, parameter tables. They take tensors (or methods) and return
values; none reads global state.

Shapes: a prompt X is (n, d); singular values s are (min(n, d),), in descending order.
"""
from __future__ import annotations

import math
import warnings

import pandas as pd
import torch

from lopt_core.evaluation.spectrum import (  # noqa: F401  (re-exported: the analysis API)
    cumulative_energy,
    effective_rank,
    entropy_effective_rank,
    normalized_spectrum,
    singular_values,
)
from lopt_core.methods.lopt import LoPT1, svd_factors


def truncate(X: torch.Tensor, r: int) -> torch.Tensor:
    """The best rank-r approximation of X (Eckart–Young): the truncated SVD."""
    if not 1 <= r <= min(X.shape):
        raise ValueError(f"rank r must be between 1 and {min(X.shape)}, got {r}")
    U, V = svd_factors(X.detach().float().cpu(), r)
    return (U @ V).to(X.device)


def svd_warm_start(prompt: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoPT-1 factors U (n, r), V (r, d) whose product is the best rank-r approximation of ``prompt``."""
    if not 1 <= r <= min(prompt.shape):
        raise ValueError(f"rank r must be between 1 and {min(prompt.shape)}, got {r}")
    return svd_factors(prompt.detach().float().cpu(), r)


def input_prompt(method, backbone) -> torch.Tensor:
    """X (n, d) of an input-prompt method (prompt tuning, LoPT) for ``backbone``, detached; any other method, or
    a prompt of another width, is refused."""
    X = method.input_prompt().detach() if method.prompt_kind == "input" else None
    if X is None or X.shape[1] != backbone.hidden_size:
        raise ValueError(f"{method.name} does not hold an input prompt of width d={backbone.hidden_size}")
    return X


def truncate_method(method, r: int, backbone) -> LoPT1:
    """A trained input-prompt method (prompt tuning or LoPT) cut to rank r, as a LoPT-1 method.

    The new method scores, trains and saves like any other; its prompt is ``truncate(X, r)``.
    """
    U, V = svd_warm_start(input_prompt(method, backbone), r)
    with warnings.catch_warnings():  # a high-rank truncation is an analysis, not a parameter budget
        warnings.filterwarnings("ignore", message=".*more than the full prompt.*")
        return LoPT1.from_factors(backbone, U, V, seed=method.config.seed)


def nearest_tokens(X: torch.Tensor, embedding: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k vocabulary rows by cosine similarity to each prompt row: (indices, similarities), each (n, k)."""
    Xn = torch.nn.functional.normalize(X.detach().float(), dim=1)
    En = torch.nn.functional.normalize(embedding.detach().float().to(Xn.device), dim=1)
    sims = Xn @ En.T  # (n, V)
    top = sims.topk(k, dim=1)
    return top.indices.cpu(), top.values.cpu()


def prompt_similarity(X1: torch.Tensor, X2: torch.Tensor, r: int | None = None,
                      center: torch.Tensor | None = None) -> dict[str, float]:
    """How alike two prompts of the same shape are.

    ``subspace``: mean squared cosine of the principal angles between their top-r row spaces
    (1 = same subspace, r/d expected for random ones: ``random_subspace_similarity``); ``row_cosine``: mean
    cosine of matching rows; ``r`` defaults to the smaller 90%-energy effective rank of the two. ``center``
    (d,) is subtracted from every row first: pass the embedding table's mean row, which every vocabulary-born
    prompt shares and which would otherwise make any two of them look alike.
    """
    if X1.shape != X2.shape:
        raise ValueError(f"prompts must have the same shape, got {tuple(X1.shape)} and {tuple(X2.shape)}")
    A, B = X1.detach().double().cpu(), X2.detach().double().cpu()
    if center is not None:
        c = center.detach().double().cpu().reshape(1, -1)
        A, B = A - c, B - c
    if r is None:
        r = min(effective_rank(singular_values(A)), effective_rank(singular_values(B)))
    Va = torch.linalg.svd(A, full_matrices=False).Vh[:r]  # (r, d)
    Vb = torch.linalg.svd(B, full_matrices=False).Vh[:r]
    subspace = float((Va @ Vb.T).pow(2).sum() / r)
    rows = torch.nn.functional.cosine_similarity(A, B, dim=1).mean()
    return {"subspace": subspace, "row_cosine": float(rows), "rank": r}


def random_subspace_similarity(r: int, d: int) -> float:
    """The expected ``subspace`` similarity of two independent, uniformly random r-dimensional subspaces of
    R^d: E[‖P_a P_b‖²_F] / r = r / d (each of the r directions of one keeps r/d of its length² in the other)."""
    return r / d


def kv_bytes_per_request(method, backbone, bytes_per_value: int = 2) -> int:
    """Bytes of cache a request carries for the method's virtual positions (bf16 by default)."""
    n = method.extra_positions
    return n * backbone.num_layers * 2 * backbone.num_kv_heads * backbone.head_dim * bytes_per_value


def parameter_table(methods: dict, backbone) -> pd.DataFrame:
    """Trainable and stored parameters, their share of the backbone and K/V bytes per request."""
    rows = []
    for label, method in methods.items():
        trainable, stored = method.trainable_parameters(), method.stored_parameters()
        rows.append({"method": label, "trainable": trainable, "stored": stored,
                     "trainable / backbone (%)": 100 * trainable / backbone.num_parameters,
                     "stored / backbone (%)": 100 * stored / backbone.num_parameters,
                     "KV bytes per request (bf16)": kv_bytes_per_request(method, backbone)})
    return pd.DataFrame(rows).set_index("method")


def at_budget(name: str, backbone, budget: int, knobs: dict[str, list[int]], tolerance: float = 0.2,
              **fixed) -> dict:
    """The build options of method ``name`` that train closest to ``budget`` parameters on ``backbone``.

    Every combination of ``knobs`` (option → candidate values, e.g. ``{"rank": range(1, 21)}``) is built with the
    ``fixed`` options (without its data-dependent start: only its size counts) and the one whose trainable count is
    nearest the budget in ratio wins (the first in the knobs' order on a tie). Returns ``{"options",
    "trainable_parameters", "stored_parameters"}``; raises ValueError when no combination comes within
    ``tolerance`` (a ratio of 1.2 either way by default), e.g. residual prompt tuning, whose MLP alone outgrows a
    1.2k budget on a 576-wide model."""
    from itertools import product

    from lopt_core.methods import make_config, method_class

    best = None
    for values in product(*knobs.values()):
        options = {**fixed, **dict(zip(knobs, values, strict=True))}
        try:
            with warnings.catch_warnings():  # e.g. LoPT-1's "r = n trains more than the full prompt": a size, asked
                warnings.simplefilter("ignore")
                method = method_class(name)(make_config(name, **options), backbone, initialise=False)
        except ValueError:  # not a valid configuration of this method (e.g. a rank above the prompt length)
            continue
        count = method.trainable_parameters()
        gap = abs(math.log(count / budget))
        if best is None or gap < best[0]:
            best = (gap, options, count, method.stored_parameters())
    if best is None or best[0] > math.log(1 + tolerance):
        closest = f"the closest trains {best[2]:,}" if best else "no combination of the knobs is valid"
        raise ValueError(f"{name} has no configuration within {tolerance:.0%} of {budget:,} trainable parameters "
                         f"on {backbone.name} over {dict(knobs)}: {closest}")
    return {"options": best[1], "trainable_parameters": best[2], "stored_parameters": best[3]}


# the input-prompt family's sizes at a budget: method → (fixed options, the size searched, a second size that is set
# first, to spend about half the budget, or None). "prefix_tuning" is its raw table (no MLP: it trains what it stores).
FAMILY_SIZES = {
    "prompt_tuning": ({}, {"prompt_len": range(1, 81)}, None),
    "lopt1": ({"prompt_len": 20}, {"rank": range(1, 21)}, None),
    "lopt2": ({"prompt_len": 20}, {"rank": range(1, 21)}, None),
    "dept": ({}, {"prompt_len": range(1, 81)}, ("rank", (1, 2, 4, 8, 16, 32))),
    "residual_prompt_tuning": ({}, {"prompt_len": range(1, 81)}, ("bottleneck", (1, 2, 4, 8, 16, 32, 64))),
    "p_tuning": ({}, {"prompt_len": range(1, 81)}, ("encoder_hidden_size", (1, 2, 4, 8, 16, 32, 64))),
    "prefix_tuning": ({"reparam": False}, {"prompt_len": range(1, 21)}, None),
}


def family_at_budget(backbone, budget: int, methods: list[str] | None = None, tolerance: float = 0.2) -> dict:
    """method → its ``at_budget`` configuration at ``budget`` (``FAMILY_SIZES``), or None where it cannot come within
    ``tolerance``: LoPT's rank at n = 20, the others' prompt length, after DePT's rank, residual prompt tuning's
    bottleneck and P-tuning's encoder width are set to spend about half the budget (with a one-token prompt)."""
    out = {}
    for name in methods or list(FAMILY_SIZES):
        fixed, searched, second = FAMILY_SIZES[name]
        if second is not None:
            knob, values = second
            half = at_budget(name, backbone, budget // 2, {knob: values}, tolerance=math.inf,
                             **{**fixed, "prompt_len": 1})
            fixed = {**fixed, knob: half["options"][knob]}
        try:
            out[name] = at_budget(name, backbone, budget, searched, tolerance=tolerance, **fixed)
        except ValueError:
            out[name] = None
    return out


def log_spaced(n: int) -> list[int]:
    """Ranks 1, 2, 4, ... up to n (n included): a sensible default grid for rank sweeps."""
    out = [2 ** i for i in range(int(math.log2(n)) + 1)]
    return out if out[-1] == n else out + [n]


def pareto_front(table: pd.DataFrame, cost: str = "trainable_parameters", score: str = "accuracy") -> pd.DataFrame:
    """Rows not dominated by another row with lower-or-equal cost and higher-or-equal score
    (strictly better in one), sorted by cost: the best score each budget can buy."""
    rows = table.sort_values([cost, score], ascending=[True, False])
    front, best = [], -math.inf
    for idx, row in rows.iterrows():
        if row[score] > best:
            front.append(idx)
            best = row[score]
    return table.loc[front].sort_values(cost)
