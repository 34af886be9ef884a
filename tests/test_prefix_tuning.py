"""Prefix-tuning: K/V layout, MLP reparameterisation and materialise(), inits. (Batching, padding,
generation and serving of prefixes on every backbone are in test_contract.py.)"""
import pytest
import torch
from conftest import ATOL, RTOL, short_generation_task

from lopt_core.methods import build_method, load_method, save_method
from lopt_core.model.kv import join_layers, prefix_cache, split_table, text_kv


def batch_of(backbone, n=3):
    t = short_generation_task()
    return t.collate(t.examples("train", n, expand_references=True)[:n], backbone.tokenizer)


def test_split_and_join_are_inverse_and_follow_peft_layout(tiny):
    n, W = 3, tiny.num_layers * 2 * tiny.num_kv_heads * tiny.head_dim
    table = torch.arange(n * W, dtype=torch.float32).view(n, W)
    layers = split_table(table, tiny)
    assert len(layers) == tiny.num_layers
    assert layers[0][0].shape == (tiny.num_kv_heads, n, tiny.head_dim)
    assert torch.equal(join_layers(layers), table)
    kv = tiny.num_kv_heads * tiny.head_dim  # per token: K_0, V_0, K_1, V_1, ...
    assert torch.equal(layers[1][1][:, 0].reshape(-1), table[0, 3 * kv: 4 * kv])


def test_cache_holds_the_prefix_for_every_row_with_kv_heads(tiny_llama):
    method = build_method("prefix_tuning", tiny_llama, prompt_len=4, reparam_dim=8)
    cache = prefix_cache(tiny_llama, split_table(method.kv_table(), tiny_llama), batch_size=5)
    keys = cache.layers[0].keys
    assert keys.shape == (5, tiny_llama.num_kv_heads, 4, tiny_llama.head_dim) == (5, 2, 4, 16)
    assert all(torch.equal(keys[i], keys[0]) for i in range(5))


def test_mlp_runs_once_per_step_not_once_per_row(tiny_llama):
    method = build_method("prefix_tuning", tiny_llama, prompt_len=4, reparam_dim=8)
    calls = []
    method.mlp.register_forward_hook(lambda *args: calls.append(1))
    method.hidden_states(tiny_llama, batch_of(tiny_llama, 3))
    assert len(calls) == 1


def test_materialise_drops_the_mlp_and_keeps_outputs_identical(tiny, tmp_path):
    method = build_method("prefix_tuning", tiny, prompt_len=4, reparam_dim=16, seed=1)
    batch = batch_of(tiny)
    before = method.hidden_states(tiny, batch)
    trained, stored = method.trainable_parameters(), method.stored_parameters()
    method.materialise()
    assert not hasattr(method, "mlp") and method.config.reparam is False
    assert method.trainable_parameters() == method.stored_parameters() == stored < trained
    assert torch.equal(method.hidden_states(tiny, batch), before)
    save_method(method, tmp_path)
    again = load_method(tmp_path, tiny)
    assert torch.equal(again.hidden_states(tiny, batch), before)


@pytest.mark.slow
def test_parameter_counts_on_the_embedded_model(embedded):
    n, d, k, W = 10, 576, 512, 30 * 2 * 3 * 64
    method = build_method("prefix_tuning", embedded, prompt_len=n)
    assert method.trainable_parameters() == n * d + d * k + k + k * W + W == 6_210_944
    assert method.stored_parameters() == n * W == 115_200


def test_masked_zero_prefix_is_an_exact_no_op(tiny):
    method = build_method("prefix_tuning", tiny, prompt_len=4, reparam_dim=8, init="zero")
    assert torch.count_nonzero(method.kv_table()) == 0
    batch = batch_of(tiny)
    inputs = method.model_inputs(tiny, batch)
    inputs["attention_mask"][:, :4] = 0  # prefix masked out
    T = batch["input_ids"].shape[1]
    inputs["position_ids"] = torch.arange(T).expand(batch["input_ids"].shape[0], -1)  # positions as without it
    with_prefix = tiny.transformer(**inputs).last_hidden_state
    plain = tiny.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(with_prefix[real], plain[real], atol=1e-6, rtol=1e-6)


def test_unmasked_zero_prefix_is_not_a_no_op(tiny_llama):
    """Zero keys still take softmax mass: a zero prefix changes the outputs unless masked."""
    method = build_method("prefix_tuning", tiny_llama, prompt_len=4, reparam_dim=8, init="zero")
    batch = batch_of(tiny_llama)
    plain = tiny_llama.transformer(input_ids=batch["input_ids"]).last_hidden_state
    assert (method.hidden_states(tiny_llama, batch) - plain).abs().max() > 1e-3


def test_text_init_equals_running_the_text_first(tiny):
    """A raw prefix holding the model's own K/V of a text = the text placed before the input (on Gemma 3
    the text is longer than the sliding window, whose layers must still keep all of it)."""
    text = "table-to-text:"
    n = len(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])
    method = build_method("prefix_tuning", tiny, prompt_len=n, reparam=False, init="text", init_text=text)
    assert torch.equal(method.table, join_layers(text_kv(tiny, text)))
    ids = tiny.tokenizer(" name : A | food : French", add_special_tokens=False, return_tensors="pt")["input_ids"]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    full_ids = torch.cat([tiny.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"], ids], 1)
    want = tiny.transformer(input_ids=full_ids).last_hidden_state[:, n:]
    torch.testing.assert_close(method.hidden_states(tiny, batch), want, atol=ATOL, rtol=RTOL)


def test_text_init_through_the_mlp_fits_the_text_kv(tiny_llama):
    method = build_method("prefix_tuning", tiny_llama, prompt_len=6, reparam_dim=32, init="text", init_steps=300)
    target = method._initial_table(tiny_llama)
    err = (method.kv_table() - target).pow(2).mean() / target.var()
    assert err < 0.05, float(err)


def test_prefix_attention_mask_covers_the_prefix(tiny_llama):
    method = build_method("prefix_tuning", tiny_llama, prompt_len=4, reparam_dim=8)
    batch = batch_of(tiny_llama)
    inputs = method.model_inputs(tiny_llama, batch)
    assert inputs["attention_mask"].shape[1] == 4 + batch["input_ids"].shape[1]
    assert inputs["attention_mask"][:, :4].all()


def test_bad_prefix_configs_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="init must be one of"):
        build_method("prefix_tuning", tiny_llama, init="banana")
    with pytest.raises(ValueError, match="reparam_dim must be positive"):
        build_method("prefix_tuning", tiny_llama, reparam_dim=0)
    with pytest.raises(ValueError, match="expected L·2·n_kv·head_dim"):
        split_table(torch.zeros(2, 7), tiny_llama)
