"""Gated cache columns: attention in which chosen columns of the cache take a learned share w_l ≥ 0 per layer.

A method that writes extra columns into every layer's cache (IAPT's generated tokens) changes the frozen model
even when those columns are zero: each still takes softmax mass exp(q·0) = 1 from every query. With a gate
w_l on the written columns' unnormalised weights,

    o = (Z_r o_r + w_l Z_v o_v) / (Z_r + w_l Z_v)

(Z_r, o_r: the real columns' softmax mass and output; Z_v, o_v: the written ones'),

w_l = 0 gives exactly the frozen layer's output, and ∂o/∂w_l = Z_v (o_v − o_r) / Z_r is not zero there: the gate
trains from zero as LoRA's B does, and the columns' generators get gradients once it opens.

How it runs: the gate is an additive score bias log(w_l + ε) on the gated columns (ε = 1e-20: at w_l = 0 they keep
a weight 1e-20 of their ungated one, far below fp32's resolution, while autograd's division by w_l + ε gives the
exact derivative above). The columns and the gates travel with the cache (``GatedCache``: through training,
scoring, the decoder's left-aligned copy and beam reordering); each layer's ``update`` hands its bias to the
attention call that follows it, through ``lopt_gated_<base>``, an attention implementation registered with
transformers that adds the bias to the mask and calls the base (``sdpa`` or ``eager``). Any other cache passes
through unchanged, so the backbone stays shared with every other method.
"""
from __future__ import annotations

import functools
import sys
import threading

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lopt_core.model.backbone import Backbone
from lopt_core.model.kv import ReadOnlyCache

EPS = 1e-20
PREFIX = "lopt_gated_"
BASES = ("sdpa", "eager")
_pending = threading.local()  # (keys, bias (B, 1, 1, K)) from the last GatedCache.update on this thread


def gate_bias(w: torch.Tensor) -> torch.Tensor:
    """log(max(w, 0) + ε): the clamp keeps the weight non-negative in the forward and passes the gradient
    straight through (a gate pushed below zero can come back)."""
    w = w.float()
    return torch.log(w + (w.clamp_min(0) - w).detach() + EPS)


class GatedCache(DynamicCache):
    """A cache whose ``gated`` columns (B, C) take weight ``gates[l]`` (≥ 0) in layer l's attention.

    Columns appended later (the response, generated tokens) are ungated. ``read_only``: ``update`` returns
    [stored; new] and stores nothing (as ``kv.ReadOnlyCache``, for passes that need no cache afterwards).
    """

    gated: torch.Tensor
    gates: torch.Tensor
    read_only: bool = False

    @classmethod
    def of(cls, cache: DynamicCache, gated: torch.Tensor, gates: torch.Tensor, read_only: bool = False) -> GatedCache:
        view = cls()
        view.layers = list(cache.layers)  # the same layer objects
        view.gated, view.gates, view.read_only = gated.bool(), gates, read_only
        return view

    def columns(self, width: int) -> torch.Tensor:
        """The gated-column indicator (B, width): columns beyond the recorded ones are ungated."""
        B, C = self.gated.shape
        if width < C:
            raise RuntimeError(f"the cache has {width} columns, fewer than the {C} it was gated on")
        return torch.cat([self.gated, self.gated.new_zeros(B, width - C)], dim=1)

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        update = ReadOnlyCache.update if self.read_only else DynamicCache.update
        keys, values = update(self, key_states, value_states, layer_idx, *args, **kwargs)
        gated = self.columns(keys.shape[-2]).to(keys.device)
        bias = gate_bias(self.gates[layer_idx]).to(keys.device) * gated  # (B, K): 0 on ungated columns
        if gated.shape[0] != keys.shape[0]:
            raise RuntimeError(f"the gated columns cover {gated.shape[0]} rows, the cache {keys.shape[0]}")
        _pending.value = (keys, bias[:, None, None, :])  # for the attention call that receives these very keys
        return keys, values

    def rearranged(self, cache: DynamicCache, order: torch.Tensor | None = None, repeat: int = 1) -> GatedCache:
        """This cache's gating on ``cache``, a copy whose columns are this one's taken in ``order`` (B, C')
        and whose rows are repeated ``repeat`` times (``kv.left_align``)."""
        width = self.layers[0].keys.shape[-2]
        gated = self.columns(width).to(order.device if order is not None else self.gated.device)
        if order is not None:
            gated = gated.gather(1, order)
        return GatedCache.of(cache, gated.repeat_interleave(repeat, 0), self.gates, self.read_only)

    def ungated(self, mask: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """``mask`` (B, C) over this cache's columns (rows repeated ``repeat`` times in the cache) with the gated
        columns cleared: what position ids count (the gated columns sit between positions, not on them)."""
        return mask * ~self.columns(mask.shape[1])[::repeat].to(mask.device)

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self.gated = self.gated[beam_idx.to(self.gated.device)]

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        self.gated = self.gated.repeat_interleave(repeats, 0)

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        self.gated = self.gated[indices.to(self.gated.device)]


def _take_bias(key: torch.Tensor) -> torch.Tensor | None:
    """The bias a gated cache left for the attention over ``key``: only if ``key`` is the tensor its ``update``
    returned (a bias left by an interrupted forward is dropped, never applied to another call)."""
    pending = getattr(_pending, "value", None)
    _pending.value = None
    if pending is None or pending[0] is not key:
        return None
    return pending[1]


def _with_bias(mask: torch.Tensor | None, bias: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The float mask (B, 1|H, Q, K) the base attention adds to its scores, with the gate's bias added."""
    Q, K = query.shape[-2], key.shape[-2]
    low = torch.finfo(query.dtype).min
    if mask is None:  # no padding: causal, the queries being the last Q of the K columns
        allowed = torch.ones(Q, K, dtype=torch.bool, device=query.device).tril(K - Q)
        mask = torch.zeros(Q, K, dtype=query.dtype, device=query.device).masked_fill(~allowed, low)[None, None]
    elif mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=mask.device).masked_fill(~mask, low)
    mask = mask[..., :K]
    return mask + bias.to(mask.dtype)


def gated_attention(module, query, key, value, attention_mask, *args, base: str, **kwargs):
    """``base``'s attention with the pending gate bias (if any) added to the mask.

    In fp16 a gated call runs in fp32: at w = 0 the gated columns' weight (1e-20) and the gradient that opens the
    gate round to zero in half precision (bf16 keeps fp32's exponent range)."""
    if base == "eager":  # every model keeps its own eager function (Gemma's soft-capping, GPT-2's scaling)
        function = sys.modules[type(module).__module__].eager_attention_forward
    else:
        function = ALL_ATTENTION_FUNCTIONS[base]
    bias = _take_bias(key)
    if bias is None:
        return function(module, query, key, value, attention_mask, *args, **kwargs)
    if query.dtype != torch.float16:
        return function(module, query, key, value, _with_bias(attention_mask, bias, query, key), *args, **kwargs)
    with torch.autocast(query.device.type, enabled=False):
        q, k, v = query.float(), key.float(), value.float()
        output, weights = function(module, q, k, v, _with_bias(attention_mask, bias, q, k), *args, **kwargs)
    return output.to(query.dtype), weights


def _register() -> None:
    for base in BASES:
        AttentionInterface.register(PREFIX + base, functools.partial(gated_attention, base=base))
        AttentionMaskInterface.register(PREFIX + base, ALL_MASK_ATTENTION_FUNCTIONS[base])


_register()


def install(backbone: Backbone) -> None:
    """Let ``backbone`` run gated caches: its attention becomes ``lopt_gated_<its own>``, which is its own for
    every other cache. Idempotent."""
    current = backbone.config._attn_implementation
    if current.startswith(PREFIX):
        return
    if current not in BASES:
        raise ValueError(f"gated cache columns need 'sdpa' or 'eager' attention; {backbone.name} runs {current!r}. "
                         f"Load it with attn_implementation='sdpa'.")
    backbone.model.set_attn_implementation(PREFIX + current)
    if backbone.config._attn_implementation != PREFIX + current:
        raise RuntimeError(f"{backbone.name} ({type(backbone.model).__name__}) does not let its attention be "
                           "replaced (it does not follow transformers' AttentionInterface)")


def installed(backbone: Backbone) -> bool:
    return backbone.config._attn_implementation.startswith(PREFIX)
