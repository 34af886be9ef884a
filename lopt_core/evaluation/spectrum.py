"""Spectra of prompts: singular values, energy, effective rank (pure functions of a matrix X (n, d)).

Training records them as it goes (``training.dynamics``); the lab's analysis reads them from trained prompts.
"""
from __future__ import annotations

import torch


def singular_values(X: torch.Tensor) -> torch.Tensor:
    """Singular values of X (n, d), descending, in float64 for stable small values."""
    return torch.linalg.svdvals(X.detach().double().cpu())


def normalized_spectrum(s: torch.Tensor) -> torch.Tensor:
    """s / Σ s: a probability vector over singular directions (the input of the entropy rank)."""
    s = s.double()
    return s / s.sum()


def cumulative_energy(s: torch.Tensor) -> torch.Tensor:
    """Share of ‖X‖_F² kept by the top-k directions, for k = 1..len(s): cumsum(s²) / Σ s²."""
    e = s.double() ** 2
    return e.cumsum(0) / e.sum()


def effective_rank(s: torch.Tensor, energy: float = 0.9) -> int:
    """The smallest r whose top-r directions keep at least ``energy`` of ‖X‖_F²."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    cum = cumulative_energy(s)
    return int((cum < energy - 1e-12).sum().item()) + 1


def entropy_effective_rank(s: torch.Tensor) -> float:
    """exp(H(p)) with p = s / Σ s (Roy & Vetterli, 2007): between 1 and len(s)."""
    p = normalized_spectrum(s)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
