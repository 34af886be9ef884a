"""Key/value caches for methods that write into attention (prefix-tuning, IAPT).

Every layer's attention keeps keys and values of shape (B, n_kv_heads, length, head_dim):
``num_key_value_heads`` heads (fewer than the query heads under grouped-query attention) and,
for RoPE models, keys stored *after* rotation. A prefix is just a cache that already holds n
positions when the real tokens arrive; the model then gives the tokens positions n, n+1, ...
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from lopt_core.backbone import Backbone


def kv_width(backbone: Backbone) -> int:
    """Values per token per layer for K or V: n_kv_heads · head_dim (192 on the embedded model)."""
    return backbone.num_kv_heads * backbone.head_dim


def split_table(table: torch.Tensor, backbone: Backbone) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A flat prefix table (n, L·2·n_kv·head_dim) → per layer (K, V), each (n_kv, n, head_dim).

    Per token the table is ordered K_0, V_0, K_1, V_1, ... (PEFT's PREFIX_TUNING layout).
    """
    n = table.shape[0]
    L, H, hd = backbone.num_layers, backbone.num_kv_heads, backbone.head_dim
    if table.shape[1] != L * 2 * H * hd:
        raise ValueError(f"prefix table has width {table.shape[1]}, expected L·2·n_kv·head_dim = {L * 2 * H * hd}")
    kv = table.view(n, L * 2, H, hd).permute(1, 2, 0, 3)  # (2L, H, n, hd)
    return [(kv[2 * layer], kv[2 * layer + 1]) for layer in range(L)]


def join_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Inverse of ``split_table``: per layer (K, V) of shape (n_kv, n, head_dim) → (n, L·2·n_kv·head_dim)."""
    kv = torch.stack([t for pair in layers for t in pair])  # (2L, H, n, hd)
    n = kv.shape[2]
    return kv.permute(2, 0, 1, 3).reshape(n, -1)


def prefix_cache(backbone: Backbone, layers: list[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> DynamicCache:
    """A DynamicCache holding the same prefix for ``batch_size`` rows (expanded, not copied).

    Shapes: each K, V (n_kv, n, head_dim) → (B, n_kv, n, head_dim) in layer l of the cache.
    """
    cache = DynamicCache(config=backbone.config)
    dtype = backbone.dtype
    for layer, (k, v) in enumerate(layers):
        k = k.to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        v = v.to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        cache.update(k, v, layer)
    return cache


@torch.no_grad()
def text_kv(backbone: Backbone, text: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The frozen model's own per-layer K, V for ``text`` (positions 0..n-1), each (n_kv, n, head_dim)."""
    ids = backbone.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(backbone.device)
    if ids.shape[1] == 0:
        raise ValueError("init_text tokenises to nothing; give a non-empty text")
    out = backbone.transformer(input_ids=ids, use_cache=True)
    cache = out.past_key_values
    return [(cache.layers[i].keys[0].float(), cache.layers[i].values[0].float()) for i in range(backbone.num_layers)]


def project_kv(backbone: Backbone, layer: int, hidden: torch.Tensor,
               position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values layer ``layer`` computes for hidden states at its input.

    Runs the layer's own frozen pre-attention norm, key/value projections and (RoPE models)
    rotary embedding at ``position_ids``. Shapes: hidden (B, n, d), position_ids (B, n) →
    K, V (B, n_kv, n, head_dim), ready to append to that layer's cache.
    """
    import sys

    model = backbone.transformer
    if hasattr(model, "layers") and hasattr(model, "rotary_emb"):  # Llama, Mistral, Qwen2/3, SmolLM2
        block = model.layers[layer]
        attn = block.self_attn
        x = block.input_layernorm(hidden)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        k, v = attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)
        if hasattr(attn, "k_norm"):  # Qwen3-style per-head norm, before the rotation
            k = attn.k_norm(k)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = model.rotary_emb(x, position_ids)
        rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        _, k = rotate(k, k, cos, sin)
        return k, v
    if hasattr(model, "h"):  # GPT-2 family: learned absolute positions live in the input, not in K
        block = model.h[layer]
        x = block.ln_1(hidden)
        _, k, v = block.attn.c_attn(x).split(block.attn.split_size, dim=2)
        shape = (*x.shape[:-1], -1, block.attn.head_dim)
        return k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)
    raise NotImplementedError(
        f"project_kv knows Llama-style (layers + rotary_emb) and GPT-2-style (h) decoders, not "
        f"{type(model).__name__}; add its norm and k/v projections here")
