"""DePT (Shi & Lipani, ICLR 2024): decomposed prompt tuning. A shorter soft prompt X (n, d) before the input, and a
low-rank update s·A B (A (S, r), B (r, d)) added to the frozen embeddings of the input text's first S tokens: text
token j gets row j of s·A B.

As the authors' code (ZhengxiangShi/DePT, ``PromptEmbeddingLoRA``): A starts as ``kaiming_uniform_(a=√5)`` and B at
zero (the offsets start at zero), s = lora_alpha / √r with lora_alpha = 8, S = 256 positions (their
``max_length``), two learning rates (the prompt's, and A and B's ``lora_embedding_lr``: here ``lr_ratio`` × the
prompt's). Trainable and stored: n·d + r(S + d).

The authors' causal-LM path left-pads [source, target] to S and adds the offsets to that whole buffer, so a row's
offsets depend on its length and reach pads and target tokens, and generation shifts them (``shared/research/
family.md`` §1). The kit's choices, identical in training, scoring and generation:
- the offsets go to the input text's tokens only (``prompt_mask``: not to targets, label words or generated tokens),
  counted from the first text token: row j of s·A B to the j-th token after the soft prompt;
- BOS, when the tokenizer adds one, stays the frozen model's (it goes before the soft prompt, as for every input
  prompt of the kit);
- tokens beyond the first S get no offset.
The offsets depend on each input's tokens' positions, not on a fixed prompt alone: DePT has no cache prefix to serve
from and no PEFT equivalent to export.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lopt_core.methods import register
from lopt_core.methods._starts import starting_prompt
from lopt_core.methods.base import CachedPrompt, InputPromptMethod, PromptInitConfig
from lopt_core.model.backbone import Backbone
from lopt_core.utils import option, seeded


@dataclass
class DePTConfig(PromptInitConfig):
    rank: int = option(8, "r: the rank of the offsets A B (the authors' default)")
    positions: int = option(256, "S: the text positions that get an offset (the authors' max_length)")
    lora_alpha: float = option(8.0, "the offsets' scale is lora_alpha / √r (the authors' default, 8)")
    lr_ratio: float = option(1e-2, "A and B train at lr_ratio × the prompt's rate (the authors' second rate, "
                                   "lora_embedding_lr: 1e-4 to 5e-3 beside the prompt's 3e-1 in their checkpoints)")

    def __post_init__(self):
        super().__post_init__()
        for name in ("rank", "positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr_ratio > 0:
            raise ValueError(f"lr_ratio must be positive, got {self.lr_ratio!r}")


@register("dept")
class DePT(InputPromptMethod):
    """X (n, d) before the text, and s·A B added to the embeddings of the text's first S tokens."""
    title = "DePT"

    Config = DePTConfig
    peft_type = None  # the offsets change each input's own embeddings: the prompt X alone is not DePT's effect
    # benchmarks/lr_grid.py (label dept: 120 steps, n = 20, r = 8, S = 256, seeds 0 and 1 at every rate; the stability
    # rule), the prompt's rate: 1e-2, mean validation accuracy over yes/no and SST-2 88.7% (yes/no 91.7%, SST-2 85.7%);
    # 3e-3 below it 87.8% (SST-2's best, 86.6%), 3e-2 above it 81.2%, inside the margin. A and B at lr_ratio × it.
    recommended_lr = 1e-2

    def __init__(self, config: DePTConfig, backbone: Backbone, *, initialise: bool = True):
        super().__init__(config, backbone, initialise=initialise)
        self.prompt = nn.Parameter(starting_prompt(backbone, config, initialise).float())  # X (n, d)
        self.A = nn.Parameter(torch.zeros(config.positions, config.rank))  # (S, r)
        self.B = nn.Parameter(torch.zeros(config.rank, backbone.hidden_size))  # (r, d): the offsets start at zero
        with seeded(config.seed):  # the config's seed decides A, not the global RNG
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = config.lora_alpha / math.sqrt(config.rank)

    def input_prompt(self) -> torch.Tensor:
        return self.prompt

    def offsets(self, k: int | None = None) -> torch.Tensor:
        """s·A B for the first ``k`` text positions (all S by default): (k, d)."""
        return self.scale * (self.A[:k] @ self.B)

    def text_embeddings(self, backbone: Backbone, batch: dict, at: int) -> torch.Tensor:
        """The frozen embeddings with row j of s·A B added to the j-th text token after column ``at`` (BOS, when
        there is one, comes before), for the input text's tokens (``prompt_mask``) among the first S."""
        embeds = backbone.embed(batch["input_ids"])  # (B, T, d)
        k = min(embeds.shape[1] - at, self.config.positions)
        text = batch.get("prompt_mask", batch["attention_mask"])[:, at:at + k, None].to(embeds.dtype)  # (B, k, 1)
        moved = embeds[:, at:at + k] + text * self.offsets(k).to(embeds.dtype)
        return torch.cat([embeds[:, :at], moved, embeds[:, at + k:]], dim=1)

    def prompt_kv(self, backbone: Backbone) -> CachedPrompt:
        raise NotImplementedError("dept adds offsets to each input's own token embeddings: its effect is not a cache "
                                  "prefix that every request could start from")

    def param_groups(self, lr: float) -> list[dict]:
        """The prompt at ``lr``, A and B at ``lr_ratio`` × ``lr`` (the authors' two rates)."""
        return [{"params": [self.prompt], "lr": lr}, {"params": [self.A, self.B], "lr": self.config.lr_ratio * lr}]

    def factor_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        return [(self.A, self.B)]  # used only as their product: the preconditioned step applies

    def parameter_formula(self) -> int:
        c, d = self.config, self.dims["hidden_size"]
        return c.prompt_len * d + c.rank * (c.positions + d)  # n·d + r(S + d)
