"""Zero-shot baseline: the frozen backbone with no prompt at all (0 trainable parameters)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lopt_core.methods import register
from lopt_core.methods.base import PROMPT_LEN, CachedPrompt, MethodConfig, PromptMethod
from lopt_core.model.backbone import Backbone
from lopt_core.utils import option


@dataclass
class ZeroShotConfig(MethodConfig):
    prompt_len: int = option(0, PROMPT_LEN)

    def __post_init__(self):
        if self.prompt_len != 0:
            raise ValueError("zero_shot adds no prompt: leave prompt_len at 0")


@register("zero_shot")
class ZeroShot(PromptMethod):
    """The input as it is: the baseline every method is compared with."""
    title = "zero-shot"

    Config = ZeroShotConfig

    def model_inputs(self, backbone: Backbone, batch: dict) -> dict:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def prompt_kv(self, backbone: Backbone) -> CachedPrompt:
        shape = (backbone.num_kv_heads, 0, backbone.head_dim)
        empty = torch.zeros(shape, dtype=backbone.compute_dtype, device=backbone.device)
        return CachedPrompt([(empty, empty)] * backbone.num_layers)

    def parameter_formula(self) -> int:
        return 0
