"""P-tuning (Liu et al., 2021) as PEFT implements it (``peft.tuners.p_tuning.PromptEncoder``, the pinned 0.21.2):
n trainable input vectors E (n, d) through a prompt encoder make the soft prompt X (n, d) before the input.

- ``encoder="mlp"`` (PEFT's default and recommendation): X = Linear(h, d)(ReLU(Linear(h, h)(ReLU(Linear(d, h)(E)))))
  row by row; trainable n·d + (d·h + h) + (h·h + h) + (h·d + d).
- ``encoder="lstm"``: a bidirectional LSTM (``encoder_num_layers`` layers, hidden h per direction, dropout between
  layers) over the n rows, then Linear(2h, 2h) → ReLU → Linear(2h, d).
h = ``encoder_hidden_size`` (PEFT's default: d). E starts as ``nn.Embedding``'s N(0, 1), and the layers as
PyTorch's defaults, built in PEFT's order under the config's seed: the kit's start is PEFT's under the same
``torch.manual_seed`` (tested).

Stored per task: X itself, n·d. PEFT saves only the encoder's output (``prompt_embeddings``) and reads it back in
inference mode; ``materialise()`` does the same here (drops E and the encoder, keeps X), and the kit exports and
imports ``P_TUNING`` adapters (``lopt_core.serving.interop``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from lopt_core.methods import register
from lopt_core.methods.base import InputPromptMethod, MethodConfig
from lopt_core.model.backbone import Backbone
from lopt_core.utils import option, seeded

ENCODERS = ("mlp", "lstm")


@dataclass
class PTuningConfig(MethodConfig):
    encoder: str = option("mlp", "the prompt encoder: 'mlp' (PEFT's default) or 'lstm'")
    encoder_hidden_size: int | None = option(None, "h: the encoder's width (None: d, PEFT's default)")
    encoder_num_layers: int = option(2, "the LSTM's layers (PEFT's default; the MLP always has 3 linear layers)")
    encoder_dropout: float = option(0.0, "dropout between the LSTM's layers (PEFT's default)")
    reparam: bool = option(True, "train through the encoder; materialise() keeps its output X and drops it")

    def __post_init__(self):
        super().__post_init__()
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        hidden = self.encoder_hidden_size
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"encoder_hidden_size must be a positive integer or None, got {hidden!r}")
        if not isinstance(self.encoder_num_layers, int) or self.encoder_num_layers < 1:
            raise ValueError(f"encoder_num_layers must be a positive integer, got {self.encoder_num_layers!r}")
        if not 0.0 <= self.encoder_dropout < 1.0:
            raise ValueError(f"encoder_dropout must be in [0, 1), got {self.encoder_dropout!r}")


@register("p_tuning")
class PTuning(InputPromptMethod):
    """X = encoder(E); after ``materialise()``, X as one free matrix (what PEFT saves)."""
    title = "P-tuning"

    Config = PTuningConfig
    peft_type = "P_TUNING"
    # benchmarks/lr_grid.py (label p_tuning: 120 steps, n = 20, the MLP encoder at h = d, seeds 0 and 1 at every
    # rate; the stability rule): 1e-3, mean validation accuracy over yes/no and SST-2 84.9% (yes/no 85.0%, SST-2
    # 84.7%); 3e-3 above it 81.0% (yes/no 76.0%), 3e-4 below it 80.2%, and PEFT's 1e-4 (its own comparison's rate)
    # 79.8% (yes/no 73.3%). Below 1e-3 yes/no learned on one seed of two; SST-2 is flat (84.7-86.8%). The prompt
    # starts from the encoder's output, not from words, so prompt tuning's rate said little about it.
    recommended_lr = 1e-3

    def __init__(self, config: PTuningConfig, backbone: Backbone, *, initialise: bool = True):
        super().__init__(config, backbone, initialise=initialise)
        n, d = config.prompt_len, backbone.hidden_size
        h = self.hidden = config.encoder_hidden_size or d
        if not config.reparam:
            self.prompt = nn.Parameter(torch.zeros(n, d))  # X (n, d): a materialised or imported prompt
            return
        with seeded(config.seed):  # PEFT's modules in PEFT's order: the same start as PEFT's under this seed
            self.embedding = nn.Embedding(n, d)  # E (n, d), N(0, 1)
            if config.encoder == "lstm":
                self.lstm_head = nn.LSTM(input_size=d, hidden_size=h, num_layers=config.encoder_num_layers,
                                         dropout=config.encoder_dropout, bidirectional=True, batch_first=True)
                self.mlp_head = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.ReLU(), nn.Linear(2 * h, d))
            else:
                self.mlp_head = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d))

    def input_prompt(self) -> torch.Tensor:
        if not self.config.reparam:
            return self.prompt
        E = self.embedding.weight  # (n, d)
        if self.config.encoder == "lstm":
            return self.mlp_head(self.lstm_head(E.unsqueeze(0))[0]).squeeze(0)  # the n rows as one sequence
        return self.mlp_head(E)

    @torch.no_grad()
    def materialise(self) -> PTuning:
        """Keep the prompt X the encoder makes, as one free matrix, and drop E and the encoder (as PEFT saves)."""
        if self.config.reparam:
            X = self.input_prompt().detach().clone()
            for name in ("embedding", "lstm_head", "mlp_head"):
                if hasattr(self, name):
                    delattr(self, name)
            self.config = dataclasses.replace(self.config, reparam=False)
            self.prompt = nn.Parameter(X)
        return self

    def parameter_formula(self) -> int:
        c, d, h = self.config, self.dims["hidden_size"], self.hidden
        n_d = c.prompt_len * d
        if not c.reparam:
            return n_d
        if c.encoder == "mlp":
            return n_d + (d * h + h) + (h * h + h) + (h * d + d)
        lstm = sum(2 * (4 * h * ((d if layer == 0 else 2 * h) + h) + 8 * h) for layer in range(c.encoder_num_layers))
        return n_d + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)

    def stored_parameters(self) -> int:
        return self.config.prompt_len * self.dims["hidden_size"]  # X, n·d
