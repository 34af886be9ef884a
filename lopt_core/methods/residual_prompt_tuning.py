"""Residual prompt tuning (Razdaibiedina et al., ACL Findings 2023): the soft prompt through a bottleneck MLP with
a residual connection, each row P_i → Φ(P_i) = P_i + LN(W₂ ReLU(W₁ P_i + b₁) + b₂).

As the authors' code (arazd/ResidualPrompts, ``ResMLP`` with ``train.py``'s defaults): Linear(d, m) → ReLU →
Linear(m, d) → LayerNorm(d), the residual added after the LayerNorm, m = 800, no dropout, one MLP shared by the n
soft tokens (``separate_mlps``: one per token). Trainable: n·d + k(2·d·m + m + 3·d), k = 1 shared or n separate
(without the LayerNorm, 2·d fewer per MLP). Stored per task: n·d, the prompt Φ(P) itself: ``materialise()`` drops the
MLP and keeps Φ(P), as the authors' README says to (their train.py saves the raw P).

The kit's choices, where the authors' code does another thing:
- The start: with PyTorch's default init (the authors'), the LayerNorm's output has unit variance per coordinate, far
  above the scale of a small model's embeddings, so Φ(P) starts far from the prompt P and from any real token.
  ``mlp_start="zero"`` (the default) sets the LayerNorm's gain to 0 (W₂ and b₂ without a LayerNorm): Φ(P) = P at the
  start, prompt tuning's own start, and the branch grows from there (LoRA's B = 0). ``mlp_start="authors"`` keeps
  PyTorch's defaults.
- P starts as the kit's other input prompts do (``init``: common words by default); the authors draw uniformly
  random vocabulary rows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from lopt_core.methods import register
from lopt_core.methods._starts import starting_prompt
from lopt_core.methods.base import InputPromptMethod, PromptInitConfig
from lopt_core.model.backbone import Backbone
from lopt_core.utils import option, seeded

MLP_STARTS = ("zero", "authors")


@dataclass
class ResidualPromptTuningConfig(PromptInitConfig):
    bottleneck: int = option(800, "m: the MLP's hidden width (the authors' default)")
    separate_mlps: bool = option(False, "one MLP per soft token instead of one shared by all (the authors' option)")
    layer_norm: bool = option(True, "LayerNorm on the MLP's output, before the residual (the authors' default)")
    mlp_start: str = option("zero", "'zero': the LayerNorm's gain at 0 (W₂, b₂ without one), so Φ(P) = P at the "
                                    "start; 'authors': PyTorch's default init, as the authors' code")
    reparam: bool = option(True, "train through the MLP; materialise() keeps the prompt Φ(P) and drops it")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise ValueError(f"bottleneck must be a positive integer, got {self.bottleneck!r}")
        if self.mlp_start not in MLP_STARTS:
            raise ValueError(f"mlp_start must be one of {MLP_STARTS}, got {self.mlp_start!r}")


def residual_mlp(d: int, m: int, layer_norm: bool, start: str) -> nn.Sequential:
    """Linear(d, m) → ReLU → Linear(m, d) → LayerNorm(d): the branch Φ(P) − P; zero at the start if ``start="zero"``."""
    layers = [nn.Linear(d, m), nn.ReLU(), nn.Linear(m, d)] + ([nn.LayerNorm(d)] if layer_norm else [])
    if start == "zero":
        nn.init.zeros_(layers[-1].weight)  # the LayerNorm's gain, or W₂
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)


@register("residual_prompt_tuning")
class ResidualPromptTuning(InputPromptMethod):
    """X = Φ(P) = P + MLP(P) row by row; after ``materialise()``, X = the trained Φ(P) as one free matrix."""
    title = "residual prompt tuning"

    Config = ResidualPromptTuningConfig
    # benchmarks/lr_grid.py (label residual_pt: 120 steps, n = 20, the default m = 800, seeds 0 and 1 at every rate;
    # the stability rule): 1e-2, mean validation accuracy over yes/no and SST-2 91.5% (yes/no 96.0%, SST-2 86.9%); 3e-2
    # above it 82.9% (yes/no 80.0%), 3e-3 below it 84.7%. A half-decade above prompt tuning's rate; the branch starts
    # at zero, so training starts where prompt tuning's does.
    recommended_lr = 1e-2

    def __init__(self, config: ResidualPromptTuningConfig, backbone: Backbone, *, initialise: bool = True):
        super().__init__(config, backbone, initialise=initialise)
        n, d = config.prompt_len, backbone.hidden_size
        self.prompt = nn.Parameter(starting_prompt(backbone, config, initialise).float())  # P (n, d)
        if config.reparam:
            with seeded(config.seed):  # the config's seed decides the MLP's start, not the global RNG
                self.mlps = nn.ModuleList(residual_mlp(d, config.bottleneck, config.layer_norm, config.mlp_start)
                                          for _ in range(n if config.separate_mlps else 1))

    def input_prompt(self) -> torch.Tensor:
        if not self.config.reparam:
            return self.prompt
        rows = self.prompt.split(self.config.prompt_len // len(self.mlps))  # all n rows, or one row per MLP
        return self.prompt + torch.cat([mlp(part) for mlp, part in zip(self.mlps, rows, strict=True)])

    @torch.no_grad()
    def materialise(self) -> ResidualPromptTuning:
        """Keep the prompt Φ(P) the MLP makes, as one free matrix, and drop the MLP: outputs stay identical."""
        if self.config.reparam:
            X = self.input_prompt().detach().clone()
            del self.mlps
            self.config = dataclasses.replace(self.config, reparam=False)
            self.prompt = nn.Parameter(X)
        return self

    def parameter_formula(self) -> int:
        c, d = self.config, self.dims["hidden_size"]
        if not c.reparam:
            return c.prompt_len * d  # n·d
        per_mlp = 2 * d * c.bottleneck + c.bottleneck + d + (2 * d if c.layer_norm else 0)  # W₁, b₁, W₂, b₂, LN
        return c.prompt_len * d + (c.prompt_len if c.separate_mlps else 1) * per_mlp

    def stored_parameters(self) -> int:
        return self.config.prompt_len * self.dims["hidden_size"]  # Φ(P), n·d
