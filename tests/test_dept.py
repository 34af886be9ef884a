"""DePT: the offsets against a hand-built forward, where they go (text tokens among the first S, never BOS, targets
or pads), the start, the two rates, counts and what it cannot do. (Batching, padding, gradients, generation and
resuming on every backbone are in test_contract.py.)"""
import math

import pytest
import torch
from conftest import backbone, batch_of, short_generation_task, short_task

from lopt_core.methods import build_method
from lopt_core.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from lopt_core.serving.interop import prompt_embeddings


def moved(method, scale=0.1):
    """As if trained: B away from zero, so the offsets are not."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        method.B.add_(scale * torch.randn(method.B.shape, generator=g))
    return method


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-llama-bos"])
def test_the_forward_is_the_prompt_then_the_offset_text(spec):
    """[BOS]? [X] [E(x_j) + s·(A B)_j for the text's tokens j < S, E(x_j) after them]: built by hand, token by token."""
    tiny = backbone(spec)
    S = 5
    method = moved(build_method("dept", tiny, prompt_len=3, rank=2, positions=S))
    batch = batch_of(short_task(), tiny, 3)
    at = int(tiny.tokenizer("a")["input_ids"][:1] == [tiny.tokenizer.bos_token_id])
    assert at == (spec == "tiny-llama-bos")
    s = 8 / math.sqrt(2)
    AB = method.A.detach() @ method.B.detach()
    rows = []
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        E = tiny.embed(ids).detach().clone()
        for j in range(len(ids) - at):
            if j < S and mask[at + j]:
                E[at + j] += s * AB[j]
        rows.append(torch.cat([E[:at], method.prompt.detach(), E[at:]]))
    inputs = method.model_inputs(tiny, batch)
    torch.testing.assert_close(inputs["inputs_embeds"].detach(), torch.stack(rows), atol=1e-6, rtol=1e-5)


def test_targets_and_pads_get_no_offset(tiny_llama):
    """Training a generation task: only the input text (prompt_mask) moves; its targets stay the frozen model's,
    as the tokens generated after it do."""
    method = moved(build_method("dept", tiny_llama, prompt_len=3, rank=2, positions=64))
    batch = batch_of(short_generation_task(), tiny_llama, 3)
    change = (method.token_embeddings(tiny_llama, batch) - tiny_llama.embed(batch["input_ids"])).abs().sum(-1)
    text = batch["prompt_mask"].bool()
    assert (change[text] > 0).all() and (change[~text] == 0).all()
    assert batch["target_mask"].any() and not (batch["target_mask"].bool() & text).any()


def test_the_start_is_prompt_tunings(tiny):
    """B = 0: the offsets are zero, so DePT starts as prompt tuning with the same prompt (same init and seed)."""
    method = build_method("dept", tiny, prompt_len=4, rank=2, positions=6, seed=2)
    reference = PromptTuning(PromptTuningConfig(prompt_len=4, seed=2), tiny)
    batch = batch_of(short_task(), tiny)
    assert torch.equal(method.hidden_states(tiny, batch), reference.hidden_states(tiny, batch))
    assert method.A.abs().sum() > 0 and not method.B.any()
    bound = 1 / math.sqrt(2)  # kaiming_uniform_(a=√5) on (S, r): U(±1/√r)
    assert method.A.abs().max() <= bound


def test_the_prompt_and_the_offsets_train_at_their_two_rates(tiny_llama):
    method = build_method("dept", tiny_llama, prompt_len=4, rank=2, positions=6, lr_ratio=0.05)
    groups = method.param_groups(1e-2)
    assert [g["lr"] for g in groups] == [1e-2, pytest.approx(5e-4)]
    assert groups[0]["params"] == [method.prompt] and groups[1]["params"] == [method.A, method.B]
    assert method.factor_pairs() == [(method.A, method.B)]


def test_counts_are_the_authors(tiny_llama):
    """n·d + r(S + d), trained and stored."""
    n, r, S, d = 4, 3, 10, tiny_llama.hidden_size
    method = build_method("dept", tiny_llama, prompt_len=n, rank=r, positions=S)
    assert method.trainable_parameters() == method.stored_parameters() == n * d + r * (S + d)


def test_it_has_no_cache_prefix_and_no_peft_export(tiny_llama):
    method = build_method("dept", tiny_llama, prompt_len=4, rank=2, positions=6)
    with pytest.raises(NotImplementedError, match="offsets to each input's own token embeddings"):
        method.prompt_kv(tiny_llama)
    with pytest.raises(ValueError, match="dept has no fixed prompt to export"):
        prompt_embeddings(method)


@pytest.mark.parametrize(("options", "message"), [({"rank": 0}, "rank must be a positive integer"),
                                                  ({"positions": 0}, "positions must be a positive integer"),
                                                  ({"lr_ratio": 0.0}, "lr_ratio must be positive")])
def test_bad_options_are_refused_clearly(options, message, tiny_llama):
    with pytest.raises(ValueError, match=message):
        build_method("dept", tiny_llama, prompt_len=4, **options)
