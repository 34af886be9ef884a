"""PEFT's initialisations, as the kit makes them: prompt tuning's SAMPLE_VOCAB (the same ids as PEFT's under the
same seed) and prefix-tuning's zero init (PEFT's init_weights="zero": the same zero table, the same logits)."""
import copy

import pytest
import torch
from conftest import backbone
from safetensors.torch import load_file

from lopt_core.methods import build_method
from lopt_core.methods._starts import sample_vocab_ids
from lopt_core.serving.interop import ADAPTER_WEIGHTS, to_peft


def peft_model(bb, config, seed=0):
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(copy.deepcopy(bb.model), config)


@pytest.mark.parametrize("seed", [0, 5])
def test_sample_vocab_is_pefts_under_the_same_seed(seed):
    from peft import PromptTuningConfig

    bb = backbone("tiny-qwen2")
    n = 6
    theirs = peft_model(bb, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n,
                                               prompt_tuning_init="SAMPLE_VOCAB"), seed)
    ours = build_method("prompt_tuning", bb, prompt_len=n, init="sample_vocab", seed=seed)
    assert torch.equal(ours.prompt.detach(), theirs.prompt_encoder["default"].embedding.weight.detach())


def test_sample_vocab_draws_from_every_row_with_replacement():
    """Uniform over the whole table (special and padding rows too, no tokenizer), repeats allowed: unlike 'vocab',
    which draws distinct common words."""
    bb = backbone("tiny-llama")
    ids = sample_vocab_ids(bb, 4000, seed=1)
    rows = bb.embedding_matrix.shape[0]
    assert min(ids) >= 0 and max(ids) < rows and len(set(ids)) < len(ids)
    assert len(set(ids)) > 0.9 * rows  # 4000 draws over a small table reach nearly every row
    assert sample_vocab_ids(bb, 8, seed=2) == sample_vocab_ids(bb, 8, seed=2) != sample_vocab_ids(bb, 8, seed=3)


@pytest.mark.parametrize("reparam", [False, True], ids=["table", "mlp"])
def test_a_zero_prefix_is_pefts_zero_init(reparam, tmp_path):
    """init='zero' makes the table PEFT's init_weights='zero' makes (zero keys and values at every layer), through
    the MLP (its last layer at zero) or not; PEFT's model then computes the kit's logits. Zero keys still take a
    share of each softmax (exp(0) per slot): not the frozen model."""
    from peft import PrefixTuningConfig

    bb = backbone("tiny-llama")
    ours = build_method("prefix_tuning", bb, prompt_len=3, reparam=reparam, reparam_dim=8, init="zero")
    assert not ours.kv_table().any()
    width = bb.num_kv_heads * bb.head_dim
    theirs = peft_model(bb, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, init_weights="zero",
                                               prefix_projection=reparam, encoder_hidden_size=8, token_dim=width,
                                               num_attention_heads=bb.num_kv_heads))
    theirs.save_pretrained(tmp_path / "peft")
    to_peft(ours, bb, tmp_path / "kit")
    peft_table, kit_table = (load_file(str(tmp_path / d / ADAPTER_WEIGHTS))["prompt_embeddings"]
                             for d in ("peft", "kit"))
    assert torch.equal(peft_table, kit_table) and not kit_table.any()
    ids = bb.tokenizer(["a fine film ="], return_tensors="pt")
    with torch.no_grad():
        kit = bb.logits(ours.hidden_states(bb, {**ids}))
        peft = theirs.eval()(**ids).logits
        frozen = bb.model(**ids).logits
    torch.testing.assert_close(peft, kit, atol=1e-5, rtol=1e-4)
    assert (kit - frozen).abs().max() > 1e-4
