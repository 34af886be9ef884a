import pytest
import torch

from lopt_core.backbone import Backbone, load_backbone
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


def test_tiny_backbones_are_seeded():
    a, b = load_backbone("tiny-llama"), load_backbone("tiny-llama")
    for (_, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q)


def test_logits_match_the_model_head(tiny):
    ids = tiny.tokenizer(["hello there"], return_tensors="pt")["input_ids"]
    full = tiny.model(input_ids=ids).logits
    h = tiny.transformer(input_ids=ids).last_hidden_state
    torch.testing.assert_close(tiny.logits(h), full, atol=1e-5, rtol=1e-4)


def test_local_folder_loads_like_the_original(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    again = load_backbone(str(tmp_path), device="cpu")
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(again.model(input_ids=ids).logits, tiny_llama.model(input_ids=ids).logits)
    assert again.spec == str(tmp_path)


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
