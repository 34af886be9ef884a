"""Method-specific tests: LoPT's factors and inits, prompt insertion, scoring paths, config checks.
(What every method must do on every backbone is in test_contract.py.)"""
import dataclasses

import pytest
import torch
from conftest import ATOL, RTOL, TRAINABLE, backbone, batch_of, make, short_task

from lopt_core.data import Verbalizer, load_task
from lopt_core.evaluation.scoring import class_scores, label_logits, sequence_scores
from lopt_core.methods import build_method, load_method, method_class, save_method
from lopt_core.methods.lopt import LoPT1, sigma, svd_factors
from lopt_core.methods.prompt_tuning import PromptTuning


@pytest.mark.parametrize("label", TRAINABLE)
def test_the_config_seed_alone_decides_the_initial_parameters(label, tiny_llama):
    """Same seed: the same start whatever the global RNG did before; another seed: another start."""
    torch.manual_seed(1)
    a = make(label, tiny_llama, seed=3).state_dict()
    torch.manual_seed(2)
    torch.randn(7)
    b = make(label, tiny_llama, seed=3).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state = torch.random.get_rng_state()
    c = make(label, tiny_llama, seed=4).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state), "building a method must not consume the global RNG"
    assert any(not torch.equal(a[key], c[key]) for key in a), "another seed should give another start"


def test_label_scores_equal_the_full_heads_logits(tiny):
    """label_logits (label rows, head bias, softcap) = the model's own logits at those ids; Gemma's
    softcap bends logits of ±20 by several units, Qwen2's head is untied."""
    ids = tiny.tokenizer(["a fine film =", "so dull ="], return_tensors="pt", padding=True)
    with torch.no_grad():
        full = tiny.model(**ids).logits
        h = tiny.transformer(**ids).last_hidden_state
    last = ids["attention_mask"].sum(1) - 1
    rows = torch.arange(2)
    words = [5, 17, 200]
    torch.testing.assert_close(label_logits(tiny, h[rows, last], words), full[rows, last][:, words],
                               atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_closed_forms_on_the_embedded_dimensions(embedded):
    d, n = 576, 20
    assert build_method("prompt_tuning", embedded, prompt_len=n).trainable_parameters() == n * d == 11_520
    assert build_method("lopt1", embedded, prompt_len=n, rank=2).trainable_parameters() == 2 * (n + d) == 1_192
    assert build_method("lopt2", embedded, prompt_len=n, rank=2).trainable_parameters() == 2 * 2 * d == 2_304


@pytest.mark.slow
def test_load_refuses_a_backbone_of_another_width(tiny_llama, embedded, tmp_path):
    save_method(build_method("prompt_tuning", tiny_llama, prompt_len=4), tmp_path, tiny_llama.name)
    with pytest.raises(ValueError, match="d=64"):
        load_method(tmp_path, embedded)


def test_loading_skips_the_costly_text_fit_of_an_mlp_prefix(tiny_llama, tmp_path, monkeypatch):
    method = build_method("prefix_tuning", tiny_llama, prompt_len=4, reparam_dim=8, init="text", init_steps=50)
    save_method(method, tmp_path, tiny_llama.name)
    from lopt_core.methods.prefix_tuning import PrefixTuning

    def refuse(*args, **kwargs):
        raise AssertionError("the 500-step fit ran again on load")
    monkeypatch.setattr(PrefixTuning, "_fit_mlp", refuse)
    monkeypatch.setattr(PrefixTuning, "_initial_table", refuse)
    again = load_method(tmp_path, tiny_llama)
    assert torch.equal(again.kv_table(), method.kv_table())


def test_lopt1_with_factors_of_x_equals_prompt_tuning_with_x(tiny):
    n, r = 6, 3
    g = torch.Generator().manual_seed(0)
    U, V = torch.randn(n, r, generator=g), torch.randn(r, tiny.hidden_size, generator=g) * 0.1
    X = U @ V
    pt = PromptTuning(method_class("prompt_tuning").Config(prompt_len=n), tiny, prompt=X)
    lopt = LoPT1.from_factors(tiny, U, V)
    task = short_task()
    batch = batch_of(task, tiny)
    torch.testing.assert_close(lopt.hidden_states(tiny, batch), pt.hidden_states(tiny, batch), atol=ATOL, rtol=RTOL)
    verb = task.verbalizer(tiny.tokenizer)
    torch.testing.assert_close(class_scores(lopt, tiny, batch, verb), class_scores(pt, tiny, batch, verb),
                               atol=ATOL, rtol=RTOL)


def test_lopt1_svd_init_is_the_best_rank_r_approximation():
    X = torch.randn(10, 32)
    U, V = svd_factors(X, 3)
    A, S, Bt = torch.linalg.svd(X)
    best = A[:, :3] @ torch.diag(S[:3]) @ Bt[:3]
    torch.testing.assert_close(U @ V, best, atol=1e-5, rtol=1e-4)
    U_full, V_full = svd_factors(X, 10)
    torch.testing.assert_close(U_full @ V_full, X, atol=1e-5, rtol=1e-4)


def test_prompt_is_inserted_and_removed_at_the_right_place(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    batch = batch_of(short_task(), tiny_llama, 2)
    inputs = method.model_inputs(tiny_llama, batch)
    n, T = 4, batch["input_ids"].shape[1]
    assert inputs["inputs_embeds"].shape[1] == n + T
    torch.testing.assert_close(inputs["inputs_embeds"][0, :n], method.input_prompt())
    assert inputs["attention_mask"][:, :n].all()
    torch.testing.assert_close(inputs["attention_mask"][:, n:], batch["attention_mask"])


def test_prompt_goes_after_bos_when_the_tokenizer_adds_one():
    bos_backbone = backbone("tiny-llama-bos")
    method = build_method("prompt_tuning", bos_backbone, prompt_len=3)
    batch = batch_of(short_task(), bos_backbone, 2)
    assert (batch["input_ids"][:, 0] == bos_backbone.tokenizer.bos_token_id).all()
    embeds = method.model_inputs(bos_backbone, batch)["inputs_embeds"]
    torch.testing.assert_close(embeds[:, 0], bos_backbone.embed(batch["input_ids"][:, 0]))
    torch.testing.assert_close(embeds[0, 1:4], method.input_prompt())
    assert method.hidden_states(bos_backbone, batch).shape[1] == batch["input_ids"].shape[1]
    served = method.prompt_kv(bos_backbone)
    assert served.includes_bos and served.length == 4  # [BOS][X]: requests then go in without their BOS


def test_multi_token_scoring_agrees_with_the_single_token_fast_path(tiny):
    """With single-token label words both paths must give the same class probabilities."""
    method = build_method("lopt1", tiny, prompt_len=4, rank=2)
    task = short_task(("a", "b"))
    task.label_words = ("a", "b", "c")
    batch = batch_of(task, tiny)
    verb = task.verbalizer(tiny.tokenizer)
    assert verb.single_token
    fast = class_scores(method, tiny, batch, verb).log_softmax(-1)
    slow = sequence_scores(method, tiny, batch, verb).log_softmax(-1)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=RTOL)


def test_multi_token_scores_are_sequence_log_probabilities(tiny):
    """Naive reference: run [prompt; word] through the model and sum the word's log-probs."""
    method = build_method("prompt_tuning", tiny, prompt_len=3)
    task = short_task((" good", " bad"))
    batch = batch_of(task, tiny, 2)
    verb = task.verbalizer(tiny.tokenizer)
    scores = class_scores(method, tiny, batch, verb)
    for i, row in enumerate(task.examples("train", 2)):
        prompt_ids = tiny.tokenizer(task.prompt(row))["input_ids"]
        for c, word in enumerate(verb.token_ids):
            ids = torch.tensor([prompt_ids + list(word)])
            single = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            logp = tiny.logits(method.hidden_states(tiny, single)).log_softmax(-1)[0]
            want = sum(logp[len(prompt_ids) - 1 + j, t] for j, t in enumerate(word))
            torch.testing.assert_close(scores[i, c], want, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ configs and LoPT-2
def test_rank_above_prompt_len_is_refused_with_what_to_change(tiny_llama):
    with pytest.raises(ValueError, match=r"rank=8 is larger than prompt_len=5.*rank <= 5"):
        build_method("lopt1", tiny_llama, prompt_len=5, rank=8)
    with pytest.raises(ValueError, match="positive integer"):
        build_method("lopt2", tiny_llama, prompt_len=5, rank=0)
    with pytest.raises(ValueError, match="prompt_len must be a positive integer"):
        build_method("prompt_tuning", tiny_llama, prompt_len=0)


def test_rank_above_hidden_size_is_refused(tiny_llama):
    with pytest.raises(ValueError, match="exceeds the hidden size d=64"):
        build_method("lopt1", tiny_llama, prompt_len=100, rank=80)


def test_unknown_options_list_the_valid_ones(tiny_llama):
    with pytest.raises(TypeError, match=r"no option 'rank'; its options are: prompt_len, seed, init, init_text"):
        build_method("prompt_tuning", tiny_llama, rank=2)
    with pytest.raises(ValueError, match="activation must be one of"):
        build_method("lopt2", tiny_llama, activation="swish")


def test_factorisation_larger_than_the_full_prompt_warns(tiny_llama):
    with pytest.warns(UserWarning, match="more than the full prompt"):
        build_method("lopt2", tiny_llama, prompt_len=4, rank=3)  # 2·3·64 > 4·64


def test_lopt2_x0_is_frozen_and_stored_as_token_ids(tiny_llama, tmp_path):
    method = build_method("lopt2", tiny_llama, prompt_len=5, rank=2, seed=7)
    ids = method.config.x0_token_ids
    assert len(ids) == 5
    assert "X0" not in method.state_dict() and "X0" not in dict(method.named_parameters())
    torch.testing.assert_close(method.X0, tiny_llama.embed(torch.tensor(ids)))
    again = build_method("lopt2", tiny_llama, prompt_len=5, rank=2, seed=7)
    assert again.config.x0_token_ids == ids
    save_method(method, tmp_path)
    assert torch.equal(load_method(tmp_path, tiny_llama).X0, method.X0)


def test_lopt2_leaves_the_callers_config_as_it_was(tiny_llama):
    config = method_class("lopt2").Config(prompt_len=5, rank=2)
    method = method_class("lopt2")(config, tiny_llama)
    assert config.x0_token_ids is None and len(method.config.x0_token_ids) == 5


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "soft_threshold", "tanh", "gelu"])
def test_lopt2_starts_where_its_docstring_says(embedded, activation):
    """The paper's form: U = X0's top-r right singular vectors, signed so each column's pre-activations sum above 0;
    V the least-squares fit of X0 (normal equations: the residual is orthogonal to σ(X0 U)'s columns)."""
    method = build_method("lopt2", embedded, prompt_len=20, rank=2, activation=activation, residual=False)
    X0, U, V = method.X0.double(), method.U.detach().double(), method.V.detach().double()
    top = torch.linalg.svd(X0, full_matrices=False).Vh[:2].T  # (d, r)
    torch.testing.assert_close((U.T @ top).abs(), torch.eye(2, dtype=torch.float64), atol=1e-5, rtol=0)
    assert ((X0 @ U).sum(0) > 0).all()
    H = sigma(X0 @ U, activation, method.config.threshold)
    normal = H.T @ (X0 - H @ V)  # (r, d), zero at the least-squares solution
    assert normal.abs().max() < 1e-4 * H.norm() * X0.norm()
    error = (torch.linalg.norm(X0 - H @ V) / torch.linalg.norm(X0)).item()
    assert 0.65 < error < 0.8  # the docstring's 0.72–0.75: vocabulary embeddings are not low rank


@pytest.mark.slow
def test_vocab_init_uses_word_tokens_of_the_embedded_model(embedded):
    method = build_method("lopt2", embedded, prompt_len=20, rank=2)
    words = [embedded.tokenizer.decode([i]) for i in method.config.x0_token_ids]
    assert all(w.strip().isalpha() for w in words) and len(set(words)) == 20


def test_text_init_copies_the_texts_embeddings(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=7, init="text", init_text="abc")
    ids = tiny_llama.tokenizer("abc", add_special_tokens=False)["input_ids"]
    want = tiny_llama.embed(torch.tensor((ids * 3)[:7]))
    torch.testing.assert_close(method.input_prompt(), want)


def test_verbalizer_follows_the_label_words(tiny_llama):
    task = load_task("sentiment")
    first = task.verbalizer(tiny_llama.tokenizer)
    assert first is task.verbalizer(tiny_llama.tokenizer) and isinstance(first, Verbalizer)
    task.label_words = (" false", " true")  # notebook 00's exercise: a new verbaliser, not the cached one
    assert task.verbalizer(tiny_llama.tokenizer).words == (" false", " true")


def test_materialise_leaves_the_config_it_was_given(tiny_llama):
    config = method_class("prefix_tuning").Config(prompt_len=3, reparam_dim=8)
    method = method_class("prefix_tuning")(config, tiny_llama).materialise()
    assert config.reparam is True and method.config.reparam is False
    assert dataclasses.asdict(method.config) == {**dataclasses.asdict(config), "reparam": False}
