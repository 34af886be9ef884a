"""Key/value caches for methods that write into attention (prefix-tuning, IAPT), and for serving.

Every layer's attention keeps keys and values of shape (B, n_kv_heads, length, head_dim):
``num_key_value_heads`` heads (fewer than the query heads under grouped-query attention) and,
for RoPE models, keys stored *after* rotation. A prefix is just a cache that already holds n
positions when the real tokens arrive; the model then gives the tokens positions n, n+1, ...

The kit's caches keep every position in every layer (``new_cache``): transformers' sliding-window
layers (Gemma, Mistral) would otherwise drop a prefix longer than the window from the cache, while
the attention masks, which transformers builds from cache indices, already apply the window.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from lopt_core.model.backbone import Backbone


def new_cache() -> DynamicCache:
    """An empty cache that keeps all positions of every layer (no sliding-window truncation)."""
    return DynamicCache()


class ReadOnlyCache(DynamicCache):
    """A cache a forward pass reads but never writes: ``update`` returns [stored; new] and stores nothing.

    Training and scoring passes (which need no cache afterwards) run on one, so that a decoder layer
    recomputed under gradient checkpointing sees the same keys and values the first time and the second.
    """

    @classmethod
    def of(cls, cache: DynamicCache) -> ReadOnlyCache:
        view = cls()
        view.layers = list(cache.layers)  # the same layer objects; never mutated through this view
        return view

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        if layer is None or not layer.is_initialized:
            return key_states, value_states
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)


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
    """A cache holding the same prefix for ``batch_size`` rows (expanded, not copied), in the dtype the
    backbone computes in (so bf16 requests attend to bf16 keys).

    Shapes: each K, V (n_kv, n, head_dim) → (B, n_kv, n, head_dim) in layer l of the cache.
    """
    cache = new_cache()
    dtype = backbone.compute_dtype
    for layer, (k, v) in enumerate(layers):
        k = k.to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        v = v.to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        cache.update(k, v, layer)
    return cache


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (K, V), each (B, n_kv, length, head_dim)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def rebuild(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = new_cache()
    for i, (k, v) in enumerate(layers):
        cache.update(k, v, i)
    return cache


def left_align(cache, mask: torch.Tensor, drop_last: int = 0, repeat: int = 1) -> tuple[DynamicCache, torch.Tensor]:
    """Move each row's padding to the front of a filled cache, so that every row ends at the same column.

    Keys were rotated at their own positions when they were computed, so moving them changes nothing
    but the cache index, which is what transformers' causal and sliding-window masks count: with the
    padding in front, every row's next token is the same distance from each of its real entries as in
    the right-padded pass that filled the cache. ``drop_last`` columns are removed (to be recomputed by
    the decoder), and the cache's rows are repeated ``repeat`` times (beams; ``generate`` repeats the mask
    and input ids itself). Returns the new cache and its (unrepeated) mask.
    """
    from lopt_core.data.batching import left_align_order

    order = left_align_order(mask)  # (B, T)
    keep = order.shape[1] - drop_last
    order = order[:, :keep]
    new_mask = mask.gather(1, order)
    layers = []
    for k, v in cache_layers(cache):
        idx = order[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        k, v = k.gather(2, idx), v.gather(2, idx)
        if repeat > 1:
            k, v = k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)
        layers.append((k, v))
    aligned = rebuild(layers)
    if hasattr(cache, "rearranged"):  # a cache with state of its own per column (model.gate's): it moves along
        aligned = cache.rearranged(aligned, order, repeat)
    return aligned, new_mask


@torch.no_grad()
def text_kv(backbone: Backbone, text: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The frozen model's own per-layer K, V for ``text`` (positions 0..n-1), each (n_kv, n, head_dim)."""
    ids = backbone.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(backbone.device)
    if ids.shape[1] == 0:
        raise ValueError("init_text tokenises to nothing; give a non-empty text")
    if backbone.context_length is not None and ids.shape[1] > backbone.context_length:
        raise ValueError(f"the text has {ids.shape[1]} tokens, more than {backbone.name}'s context of "
                         f"{backbone.context_length}; give a shorter one")
    out = backbone.transformer(input_ids=ids, use_cache=True, past_key_values=new_cache())
    return [(k[0].float(), v[0].float()) for k, v in cache_layers(out.past_key_values)]


# ------------------------------------------------------------------------------- per-layer K/V projection
@dataclass(frozen=True)
class RopeDecoder:
    """How a RoPE decoder family turns a layer's input into keys and values (``model.layers[l]``)."""

    rotate: Callable  # the family's apply_rotary_pos_emb(q, k, cos, sin)
    k_norm: bool = False  # a per-head norm on keys before the rotation (Qwen3, Gemma 3)
    layer_typed: bool = False  # rotary_emb(x, positions, layer_type) (Gemma 3: local and global bases)

    def __call__(self, backbone: Backbone, layer: int, hidden: torch.Tensor, position_ids: torch.Tensor):
        model = backbone.transformer
        block = model.layers[layer]
        attn = block.self_attn
        x = block.input_layernorm(hidden)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        k, v = attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)  # (B, n, n_kv, hd); Qwen2 adds biases here
        if self.k_norm:
            k = attn.k_norm(k)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, n_kv, n, hd)
        extra = (backbone.config.layer_types[layer],) if self.layer_typed else ()
        cos, sin = model.rotary_emb(x, position_ids, *extra)
        _, k = self.rotate(k, k, cos, sin)
        return k, v


def _gpt2(backbone: Backbone, layer: int, hidden: torch.Tensor, position_ids: torch.Tensor):
    """GPT-2: learned absolute positions live in the input, not in K; one fused c_attn projection."""
    block = backbone.transformer.h[layer]
    x = block.ln_1(hidden)
    _, k, v = block.attn.c_attn(x).split(block.attn.split_size, dim=2)
    shape = (*x.shape[:-1], -1, block.attn.head_dim)
    return k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)


def _decoders() -> dict[str, Callable]:
    from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb as gemma
    from transformers.models.gemma2.modeling_gemma2 import apply_rotary_pos_emb as gemma2
    from transformers.models.gemma3.modeling_gemma3 import apply_rotary_pos_emb as gemma3
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama
    from transformers.models.mistral.modeling_mistral import apply_rotary_pos_emb as mistral
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb as qwen2
    from transformers.models.qwen3.modeling_qwen3 import apply_rotary_pos_emb as qwen3

    return {
        "llama": RopeDecoder(llama),  # Llama 2/3, SmolLM2 (the embedded model)
        "mistral": RopeDecoder(mistral),
        "qwen2": RopeDecoder(qwen2),
        "qwen3": RopeDecoder(qwen3, k_norm=True),
        "gemma": RopeDecoder(gemma),
        "gemma2": RopeDecoder(gemma2),
        "gemma3_text": RopeDecoder(gemma3, k_norm=True, layer_typed=True),
        "gpt2": _gpt2,
    }


CACHE_ARGUMENTS = ("past_key_values", "layer_past", "past_key_value")  # what decoder layers call their cache


def layer_kv(backbone: Backbone, layer: int, hidden: torch.Tensor, position_ids: torch.Tensor):
    """Any decoder layer: run the layer itself on ``hidden`` with an empty cache, at ``position_ids``, and read the
    keys and values its attention stored there. Its own norm, projections (fused or not, with biases), key norms and
    rotary embedding (full, partial or layer-typed) are whatever the model does; learned absolute positions live in
    the input, not in K. The layer's output is discarded: for n generated tokens, a few extra small matmuls."""
    model, block = backbone.transformer, backbone.decoder_layers[layer]
    # the class's own signature: an instance patch (the kit's gradient checkpointing) takes *args, **kwargs
    params = inspect.signature(type(block).forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    cache = new_cache()
    kwargs = {next((name for name in CACHE_ARGUMENTS if name in params), "past_key_values"): cache,
              "position_ids": position_ids, "use_cache": True}
    rotary = getattr(model, "rotary_emb", None)
    if rotary is not None:  # RoPE models compute cos and sin once, at the model, and hand them to every layer
        typed = "layer_type" in inspect.signature(rotary.forward).parameters
        kwargs["position_embeddings"] = rotary(hidden, position_ids,
                                               *((backbone.config.layer_types[layer],) if typed else ()))
    block(hidden, **{key: value for key, value in kwargs.items() if takes_any or key in params})
    if len(cache.layers) <= layer or cache.layers[layer].keys is None:  # the attention writes at its own index
        raise NotImplementedError(
            f"layer {layer} of model_type {backbone.model_type!r} ({type(block).__name__}) stored no keys and values "
            "in the cache it was given: IAPT writes its tokens into every layer's attention cache and needs "
            "attention layers that use one (the fast table of known layouts: lopt_core.model.kv._decoders)")
    return cache.layers[layer].keys, cache.layers[layer].values


_DECODERS: dict[str, Callable] | None = None


def known_layouts() -> list[str]:
    """The model types whose K/V the fast table computes (every other one goes through ``layer_kv``)."""
    global _DECODERS
    if _DECODERS is None:
        _DECODERS = _decoders()
    return sorted(_DECODERS)


def kv_projector(backbone: Backbone, generic: bool = False) -> Callable:
    """The function that computes a layer's K/V from hidden states on this backbone: the fast table of the known
    layouts (keyed by model_type: the projections alone), or ``layer_kv`` (the whole layer, for any other layout;
    ``generic=True`` asks for it on a known one)."""
    if generic or backbone.model_type not in known_layouts():
        return layer_kv
    return _DECODERS[backbone.model_type]


def project_kv(backbone: Backbone, layer: int, hidden: torch.Tensor,
               position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values layer ``layer`` computes for hidden states at its input.

    Runs the layer's own frozen pre-attention norm, key/value projections and (RoPE models)
    rotary embedding at ``position_ids``. Shapes: hidden (B, n, d), position_ids (B, n) →
    K, V (B, n_kv, n, head_dim), ready to append to that layer's cache.
    """
    return kv_projector(backbone)(backbone, layer, hidden, position_ids)
