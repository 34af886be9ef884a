"""Tiny backbones for tests: seeded random 2-layer models (d = 64) of the layouts users bring, with a
byte-level tokenizer built offline. They exercise the mechanics; they never show that a method learns."""
from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerFast

from lopt_core.utils import seeded


def byte_tokenizer(adds_bos: bool = False, pad_token: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 bytes + ``<pad>``, ``<bos>``, ``<eos>``) built offline, for the tiny backbones.

    Every word is several tokens, so multi-token label words get exercised in the tests. ``adds_bos``
    puts ``<bos>`` before every text, as Llama-3 and Gemma tokenizers do; without ``pad_token`` the
    tokenizer has none, as GPT-2's and Llama's ship, and ``load_backbone`` falls back to EOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for special in ("<pad>", "<bos>", "<eos>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])])
    names = {"bos_token": "<bos>", "eos_token": "<eos>"}
    if pad_token:
        names["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def _tiny_llama(V: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=V - 3,
        bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_gpt2(V: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    # n_positions=64: inputs overflow the context cheaply, so the length checks get exercised
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_gemma3(V: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # One sliding and one full layer; the window (8) is shorter than a prompt plus a test row, so it is
    # really crossed. initializer_range 0.4 gives logits of about ±10, where the softcap (30) bends them.
    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"], sliding_window=8, final_logit_softcapping=30.0,
        initializer_range=0.4, pad_token_id=V - 3, bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_qwen2(V: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # Qwen2 has biases in q/k/v; the LM head is its own matrix, not the embedding table
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=V - 3,
        bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_phi3(V: int):
    from transformers import Phi3Config, Phi3ForCausalLM

    # Phi-3: one fused qkv projection; half the head dimension rotated (partial rotary)
    return Phi3ForCausalLM(Phi3Config(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, partial_rotary_factor=0.5, max_position_embeddings=512, pad_token_id=V - 3,
        bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_neox(V: int):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    # GPT-NeoX (Pythia): a quarter of each head rotated, attention and MLP in parallel off one residual
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=512, pad_token_id=V - 3,
        bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_opt(V: int):
    from transformers import OPTConfig, OPTForCausalLM

    # OPT: learned absolute positions (offset by 2), no rotary; its tokenizer puts </s> first as BOS
    return OPTForCausalLM(OPTConfig(
        vocab_size=V, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=64, max_position_embeddings=512, pad_token_id=V - 3, bos_token_id=V - 2,
        eos_token_id=V - 1))


# spec → (model builder, tokenizer options, what it is there to test)
TINY = {
    "tiny-llama": (_tiny_llama, {}, "Llama: RoPE, grouped-query attention, no BOS added"),
    "tiny-llama-bos": (_tiny_llama, {"adds_bos": True}, "the same model; its tokenizer adds BOS (Llama-3, Gemma)"),
    "tiny-gpt2": (_tiny_gpt2, {"pad_token": False}, "GPT-2: absolute positions, a 64-token context, no pad token"),
    "tiny-gemma3": (_tiny_gemma3, {"adds_bos": True},
                    "Gemma 3: BOS, layer-typed rotary, a sliding window of 8, logit softcap 30"),
    "tiny-qwen2": (_tiny_qwen2, {}, "Qwen2: biases in q/k/v, an untied LM head"),
    "tiny-phi3": (_tiny_phi3, {}, "Phi-3: fused qkv, partial rotary (half of each head)"),
    "tiny-neox": (_tiny_neox, {}, "GPT-NeoX (Pythia): partial rotary (a quarter), parallel attention and MLP"),
    "tiny-opt": (_tiny_opt, {"adds_bos": True}, "OPT: learned positions (offset 2), BOS first, no rotary"),
}
TINY_SPECS = tuple(TINY)


def tiny_model(spec: str, vocab_size: int, seed: int = 0) -> nn.Module:
    """Seeded random 2-layer model (d = 64) of one of the ``TINY`` layouts."""
    with seeded(seed):
        return TINY[spec][0](vocab_size)
