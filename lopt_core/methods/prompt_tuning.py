"""Prompt tuning (Lester et al., 2021): a free soft prompt X ∈ R^{n×d} before the input.

Trainable parameters: n·d.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lopt_core.methods import register
from lopt_core.methods._starts import starting_prompt
from lopt_core.methods.base import InputPromptMethod, PromptInitConfig
from lopt_core.model.backbone import Backbone


@dataclass
class PromptTuningConfig(PromptInitConfig):
    pass


@register("prompt_tuning")
class PromptTuning(InputPromptMethod):
    """X (n, d) is one trainable matrix."""
    title = "prompt tuning"

    Config = PromptTuningConfig
    # benchmarks/lr_grid.py (120 steps, n = 20, seeds 0 and 1 at every rate; the stability rule): 3e-3, mean
    # validation accuracy over yes/no and SST-2 89.3% (yes/no 92.7%, SST-2 85.9%; 1e-2: 83.5%, 3e-2: 84.4%, 1e-1:
    # 73.7%). SST-2 alone prefers larger rates (1e-1 87.2%, 3.16e-1 87.3%); yes/no falls above 3e-3 (1e-1: 60.3%).
    recommended_lr = 3e-3

    def __init__(self, config: PromptTuningConfig, backbone: Backbone, prompt: torch.Tensor | None = None, *,
                 initialise: bool = True):
        super().__init__(config, backbone, initialise=initialise)
        n, d = config.prompt_len, backbone.hidden_size
        if prompt is None:
            prompt = starting_prompt(backbone, config, initialise)
        if prompt.shape != (n, d):
            raise ValueError(f"prompt must have shape (n, d) = ({n}, {d}), got {tuple(prompt.shape)}")
        self.prompt = nn.Parameter(prompt.detach().float().clone())  # (n, d)

    def input_prompt(self) -> torch.Tensor:
        return self.prompt

    def parameter_formula(self) -> int:
        return self.config.prompt_len * self.dims["hidden_size"]  # n·d
