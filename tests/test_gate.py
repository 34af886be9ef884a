"""The gated attention of lopt_core.model.gate, on one attention module of the tiny Llama (IAPT's use of it, with
the frozen-model start and generation on every tiny backbone, is in test_iapt.py)."""
import pytest
import torch
from transformers import DynamicCache

from lopt_core.model import gate


def keys_and_query(dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 2, 16, generator=g).to(dtype)  # (B, heads, Q, head_dim)
    k, v = (torch.randn(1, 2, 6, 16, generator=g).to(dtype) for _ in range(2))  # (B, kv heads, K, head_dim)
    return q, k, v


def gated_call(attention, dtype, w):
    q, k, v = keys_and_query(dtype)
    cache = gate.GatedCache.of(DynamicCache(), torch.tensor([[False, False, True, True]]), w)  # columns 2, 3 gated
    keys, values = cache.update(k, v, 0)
    out, _ = gate.gated_attention(attention, q, keys, values, None, base="sdpa", scaling=0.25, dropout=0.0)
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_the_gate_gets_its_gradient_at_zero_in_half_precision(tiny_llama, dtype):
    """At w = 0 the gated columns weigh 1e-20 of their ungated weight: fp16 would round that, and the gradient that
    opens the gate, to zero; the gated call runs in fp32 there."""
    attention = tiny_llama.transformer.layers[0].self_attn
    grads = {}
    for d in (torch.float32, dtype):
        w = torch.zeros(2, requires_grad=True)
        out = gated_call(attention, d, w)
        out.float().sum().backward()
        assert out.dtype == d
        grads[d] = w.grad
    assert grads[torch.float32][0].abs() > 0.1 and grads[torch.float32][1] == 0  # only layer 0's gate was used
    torch.testing.assert_close(grads[dtype], grads[torch.float32], rtol=0.05, atol=0.0)


def test_a_bias_is_applied_only_to_the_keys_its_cache_returned(tiny_llama):
    """A bias left by a forward that stopped between the cache's update and its attention is dropped, never
    applied to another call."""
    attention = tiny_llama.transformer.layers[0].self_attn
    q, k, v = keys_and_query(torch.float32)
    plain, _ = gate.gated_attention(attention, q, k, v, None, base="sdpa", scaling=0.25, dropout=0.0)
    cache = gate.GatedCache.of(DynamicCache(), torch.tensor([[True, True, True, True]]), torch.zeros(2))
    cache.update(k.clone(), v.clone(), 0)  # its attention never runs
    again, _ = gate.gated_attention(attention, q, k, v, None, base="sdpa", scaling=0.25, dropout=0.0)
    assert torch.equal(again, plain)
