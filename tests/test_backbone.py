import pytest
import torch
from conftest import backbone
from torch import nn

from lopt_core.methods.base import adds_bos
from lopt_core.model import TINY_SPECS, Backbone, load_backbone
from lopt_core.model.kv import known_layouts, kv_projector, layer_kv, new_cache, project_kv
from lopt_core.utils import get_device


def test_tiny_backbone_is_frozen_and_has_dimensions(tiny):
    assert isinstance(tiny, Backbone)
    assert all(not p.requires_grad for p in tiny.model.parameters())
    assert not tiny.model.training
    assert tiny.hidden_size == 64 and tiny.num_layers == 2
    assert tiny.head_dim * tiny.num_heads == tiny.hidden_size
    assert tiny.vocab_size == len(tiny.tokenizer)
    assert tiny.tokenizer.padding_side == "right" and tiny.tokenizer.pad_token_id is not None


def test_tiny_llama_uses_grouped_query_attention(tiny_llama):
    assert tiny_llama.num_kv_heads == 2 < tiny_llama.num_heads == 4


def test_the_tiny_matrix_has_the_layouts_users_bring():
    assert TINY_SPECS == ("tiny-llama", "tiny-llama-bos", "tiny-gpt2", "tiny-gemma3", "tiny-qwen2", "tiny-phi3",
                          "tiny-neox", "tiny-opt")
    assert [adds_bos(backbone(s)) for s in TINY_SPECS] == [False, True, False, True, False, False, False, True]
    assert {backbone(s).model_type for s in ("tiny-phi3", "tiny-neox", "tiny-opt")}.isdisjoint(known_layouts())
    phi3, neox = backbone("tiny-phi3"), backbone("tiny-neox")
    assert hasattr(phi3.decoder_layers[0].self_attn, "qkv_proj")  # fused
    assert [b.config.rope_parameters["partial_rotary_factor"] for b in (phi3, neox)] == [0.5, 0.25]
    assert neox.config.use_parallel_residual
    gpt2 = backbone("tiny-gpt2")
    assert gpt2.context_length == 64 and gpt2.tokenizer.pad_token_id == gpt2.tokenizer.eos_token_id  # pad = EOS
    gemma = backbone("tiny-gemma3")
    assert gemma.config.layer_types == ["sliding_attention", "full_attention"] and gemma.config.sliding_window == 8
    assert gemma.config.final_logit_softcapping == 30
    qwen = backbone("tiny-qwen2")
    attn = qwen.transformer.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert qwen.model.get_output_embeddings().weight.data_ptr() != qwen.model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(backbone("tiny-llama").model.lm_head.weight, backbone("tiny-llama-bos").model.lm_head.weight)


@pytest.mark.parametrize("generic", [False, True], ids=["table", "layer"])
def test_project_kv_equals_what_each_layer_caches(tiny, generic):
    """The per-layer K/V projection reproduces the model's own cache: the fast table keyed by model_type (the known
    layouts) and the generic path that runs the layer itself (``layer_kv``: any layout; the new tiny architectures
    have only it), on every tiny backbone."""
    ids = tiny.tokenizer(["a fine film today"], return_tensors="pt")["input_ids"]
    project = kv_projector(tiny, generic=generic)
    assert (project is layer_kv) == (generic or tiny.model_type not in known_layouts())
    with torch.no_grad():
        for shift in (0, 3):  # the model's default positions, and positions that must be passed on
            pos = torch.arange(ids.shape[1])[None] + shift
            out = tiny.transformer(input_ids=ids, position_ids=pos, use_cache=True, output_hidden_states=True,
                                   past_key_values=new_cache())
            for layer in range(tiny.num_layers):
                k, v = project(tiny, layer, out.hidden_states[layer], pos)
                torch.testing.assert_close(k, out.past_key_values.layers[layer].keys, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(v, out.past_key_values.layers[layer].values, atol=1e-5, rtol=1e-4)


def test_a_layer_without_an_attention_cache_is_a_clear_error(tiny_llama, monkeypatch):
    class NoAttention(nn.Module):
        def forward(self, hidden, **kwargs):
            return hidden

    monkeypatch.setattr(type(tiny_llama.config), "model_type", "mamba")
    monkeypatch.setattr(type(tiny_llama), "decoder_layers", property(lambda self: nn.ModuleList([NoAttention()] * 2)))
    with pytest.raises(NotImplementedError, match="layer 0 of model_type 'mamba' .NoAttention. stored no keys"):
        project_kv(tiny_llama, 0, torch.zeros(1, 2, 64), torch.zeros(1, 2, dtype=torch.long))


@pytest.mark.parametrize("spec", TINY_SPECS)
def test_tiny_backbones_are_seeded(spec):
    a, b = load_backbone(spec), load_backbone(spec)
    for (_, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q)


def test_logits_match_the_model_head(tiny):
    ids = tiny.tokenizer(["hello there"], return_tensors="pt")["input_ids"]
    full = tiny.model(input_ids=ids).logits
    h = tiny.transformer(input_ids=ids).last_hidden_state
    torch.testing.assert_close(tiny.logits(h), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", TINY_SPECS)
def test_local_folder_loads_like_the_original(tmp_path, spec):
    """The real loading code (from_pretrained of a folder), on every layout: same logits, same tokenizer."""
    tiny = backbone(spec)
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    again = load_backbone(str(tmp_path), device="cpu")
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(again.model(input_ids=ids).logits, tiny.model(input_ids=ids).logits)
    assert again.spec == str(tmp_path) and again.model_type == tiny.model_type
    assert again.tokenizer("a b")["input_ids"] == tiny.tokenizer("a b")["input_ids"]
    assert again.context_length == tiny.context_length


def test_unreachable_hub_id_says_so_and_names_embedded():
    with pytest.raises(OSError) as err:
        load_backbone("no-such-org/no-such-model-for-lopt-tests")
    assert "embedded" in str(err.value) and "hub" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        load_backbone("tiny-llama", device="cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="unknown device"):
        get_device("tpu")


@pytest.mark.slow
def test_embedded_backbone_loads_from_cache(embedded):
    assert embedded.num_layers == 30 and embedded.hidden_size == 576
    assert embedded.num_heads == 9 and embedded.num_kv_heads == 3 and embedded.vocab_size == 49152
    assert embedded.dtype == torch.float32
    again = load_backbone("embedded", device="cpu")
    assert again.load_seconds < 30  # cached fp32 safetensors, not the GGUF conversion (~35 s)


@pytest.mark.slow
def test_embedded_backbone_knows_some_facts(embedded):
    tok = embedded.tokenizer
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        nxt = embedded.model(input_ids=ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"
