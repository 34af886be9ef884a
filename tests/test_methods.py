"""Contract tests over the method registry, plus equivalence and validation tests."""
import pytest
import torch
from tokenizers import processors

from lopt_core.backbone import load_backbone
from lopt_core.methods import build_method, list_methods, load_method, method_class, save_method
from lopt_core.methods.lopt import LoPT1, svd_factors
from lopt_core.methods.prompt_tuning import PromptTuning
from lopt_core.scoring import class_scores, loss_and_scores, sequence_scores
from lopt_core.tasks import Task, Verbalizer, load_task

OPTIONS = {"prompt_tuning": {"prompt_len": 5}, "lopt1": {"prompt_len": 5, "rank": 2},
           "lopt2": {"prompt_len": 5, "rank": 2}, "zero_shot": {},
           "prefix_tuning": {"prompt_len": 5, "reparam_dim": 16},
           "prefix_tuning_raw": {"prompt_len": 5, "reparam": False},
           "iapt": {"bottleneck": 8}}


def make(name, backbone, **extra):
    """Build a registry method; ``prefix_tuning_raw`` is prefix-tuning without the MLP."""
    key = "prefix_tuning" if name == "prefix_tuning_raw" else name
    return build_method(key, backbone, **OPTIONS[name], **extra)
TRAINABLE = [m for m in OPTIONS if m != "zero_shot"]
ATOL, RTOL = 1e-5, 1e-4


def test_every_registered_method_is_covered():
    assert set(list_methods()) <= set(OPTIONS)


def batch_of(task_name, backbone, n=3):
    task = load_task(task_name)
    return task, task.collate(task.examples("train", n, expand_references=True)[:n], backbone.tokenizer)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_hidden_states_align_with_the_input(name, tiny):
    method = make(name, tiny)
    _, batch = batch_of("sentiment", tiny)
    h = method.hidden_states(tiny, batch)
    assert h.shape == (*batch["input_ids"].shape, tiny.hidden_size)
    X = method.prompt_matrix()
    assert X.ndim == 2 and (name == "iapt" or X.shape[0] == method.config.prompt_len)


@pytest.mark.parametrize("name", TRAINABLE)
@pytest.mark.parametrize("task_name", ["sentiment", "restaurant"])
def test_gradients_reach_only_the_methods_parameters(name, task_name, tiny):
    method = make(name, tiny)
    task, batch = batch_of(task_name, tiny)
    loss, _ = loss_and_scores(method, tiny, batch, task)
    loss.backward()
    for p in tiny.model.parameters():
        assert p.grad is None and not p.requires_grad
    for pname, p in method.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, pname
    assert all(not b.requires_grad for b in method.buffers())


@pytest.mark.parametrize("name", TRAINABLE)
def test_the_config_seed_alone_decides_the_initial_parameters(name, tiny):
    """Same seed: the same start whatever the global RNG did before; another seed: another start."""
    torch.manual_seed(1)
    a = make(name, tiny, seed=3).state_dict()
    torch.manual_seed(2)
    torch.randn(7)
    b = make(name, tiny, seed=3).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state = torch.random.get_rng_state()
    c = make(name, tiny, seed=4).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state), "building a method must not consume the global RNG"
    assert any(not torch.equal(a[key], c[key]) for key in a), "another seed should give another start"


@pytest.mark.parametrize("name", list(OPTIONS))
def test_counted_parameters_equal_the_closed_form(name, tiny):
    method = make(name, tiny)
    assert method.trainable_parameters() == method.parameter_formula()


def test_closed_forms_on_the_embedded_dimensions(embedded):
    d, n = 576, 20
    assert build_method("prompt_tuning", embedded, prompt_len=n).trainable_parameters() == n * d == 11_520
    assert build_method("lopt1", embedded, prompt_len=n, rank=2).trainable_parameters() == 2 * (n + d) == 1_192
    assert build_method("lopt2", embedded, prompt_len=n, rank=2).trainable_parameters() == 2 * 2 * d == 2_304


@pytest.mark.parametrize("name", TRAINABLE)
def test_save_load_round_trip_is_exact(name, tiny, tmp_path):
    method = make(name, tiny, seed=3)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn_like(p))  # as if trained
    save_method(method, tmp_path, tiny.name)
    again = load_method(tmp_path, tiny)
    assert type(again) is type(method) and again.config == method.config
    for (k, v), (k2, v2) in zip(method.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(method.prompt_matrix(), again.prompt_matrix())
    _, batch = batch_of("sentiment", tiny)
    assert torch.equal(method.hidden_states(tiny, batch), again.hidden_states(tiny, batch))
    assert not list(tmp_path.glob(".*tmp"))


def test_load_refuses_a_backbone_of_another_width(tiny_llama, embedded, tmp_path):
    save_method(build_method("prompt_tuning", tiny_llama, prompt_len=4), tmp_path, tiny_llama.name)
    with pytest.raises(ValueError, match="d=64"):
        load_method(tmp_path, embedded)


def test_lopt1_with_factors_of_x_equals_prompt_tuning_with_x(tiny):
    n, r = 6, 3
    g = torch.Generator().manual_seed(0)
    U, V = torch.randn(n, r, generator=g), torch.randn(r, tiny.hidden_size, generator=g) * 0.1
    X = U @ V
    pt = PromptTuning(method_class("prompt_tuning").Config(prompt_len=n), tiny, prompt=X)
    lopt = LoPT1.from_factors(tiny, U, V)
    task, batch = batch_of("sentiment", tiny, 4)
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
    _, batch = batch_of("sentiment", tiny_llama, 2)
    inputs = method.model_inputs(tiny_llama, batch)
    n, T = 4, batch["input_ids"].shape[1]
    assert inputs["inputs_embeds"].shape[1] == n + T
    torch.testing.assert_close(inputs["inputs_embeds"][0, :n], method.prompt_matrix())
    assert inputs["attention_mask"][:, :n].all()
    torch.testing.assert_close(inputs["attention_mask"][:, n:], batch["attention_mask"])


def test_prompt_goes_after_bos_when_the_tokenizer_adds_one(tmp_path):
    backbone = load_backbone("tiny-llama")
    backbone.tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", backbone.tokenizer.bos_token_id)])
    method = build_method("prompt_tuning", backbone, prompt_len=3)
    _, batch = batch_of("sentiment", backbone, 2)
    assert (batch["input_ids"][:, 0] == backbone.tokenizer.bos_token_id).all()
    embeds = method.model_inputs(backbone, batch)["inputs_embeds"]
    torch.testing.assert_close(embeds[:, 0], backbone.embed(batch["input_ids"][:, 0]))
    torch.testing.assert_close(embeds[0, 1:4], method.prompt_matrix())
    assert method.hidden_states(backbone, batch).shape[1] == batch["input_ids"].shape[1]


def test_multi_token_scoring_agrees_with_the_single_token_fast_path(tiny):
    """With single-token label words both paths must give the same class probabilities."""
    method = build_method("lopt1", tiny, prompt_len=4, rank=2)
    task = Task("t", "classification", "{text} =", {"train": load_task("sentiment").examples("train", 4)},
                label_words=("a", "b", "c"))
    batch = task.collate(task.examples("train"), tiny.tokenizer)
    verb = task.verbalizer(tiny.tokenizer)
    assert verb.single_token
    fast = class_scores(method, tiny, batch, verb).log_softmax(-1)
    slow = sequence_scores(method, tiny, batch, verb).log_softmax(-1)
    torch.testing.assert_close(fast, slow, atol=ATOL, rtol=RTOL)


def test_multi_token_scores_are_sequence_log_probabilities(tiny_llama):
    """Naive reference: run [prompt; word] through the model and sum the word's log-probs."""
    method = build_method("prompt_tuning", tiny_llama, prompt_len=3)
    task, batch = batch_of("sentiment", tiny_llama, 2)
    verb = task.verbalizer(tiny_llama.tokenizer)
    scores = class_scores(method, tiny_llama, batch, verb)
    for i, row in enumerate(task.examples("train", 2)):
        prompt_ids = tiny_llama.tokenizer(task.prompt(row))["input_ids"]
        for c, word in enumerate(verb.token_ids):
            ids = torch.tensor([prompt_ids + list(word)])
            single = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            logp = tiny_llama.logits(method.hidden_states(tiny_llama, single)).log_softmax(-1)[0]
            want = sum(logp[len(prompt_ids) - 1 + j, t] for j, t in enumerate(word))
            torch.testing.assert_close(scores[i, c], want, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ configs and LoPT-2
def test_rank_above_prompt_len_is_refused_with_what_to_change(tiny):
    with pytest.raises(ValueError, match=r"rank=8 is larger than prompt_len=5.*rank <= 5"):
        build_method("lopt1", tiny, prompt_len=5, rank=8)
    with pytest.raises(ValueError, match="positive integer"):
        build_method("lopt2", tiny, prompt_len=5, rank=0)
    with pytest.raises(ValueError, match="prompt_len must be a positive integer"):
        build_method("prompt_tuning", tiny, prompt_len=0)


def test_rank_above_hidden_size_is_refused(tiny):
    with pytest.raises(ValueError, match="exceeds the hidden size d=64"):
        build_method("lopt1", tiny, prompt_len=100, rank=80)


def test_unknown_options_list_the_valid_ones(tiny):
    with pytest.raises(TypeError, match=r"no option 'rank'; its options are: prompt_len, seed, init, init_text"):
        build_method("prompt_tuning", tiny, rank=2)
    with pytest.raises(ValueError, match="activation must be one of"):
        build_method("lopt2", tiny, activation="swish")


def test_factorisation_larger_than_the_full_prompt_warns(tiny):
    with pytest.warns(UserWarning, match="more than the full prompt"):
        build_method("lopt2", tiny, prompt_len=4, rank=3)  # 2·3·64 > 4·64


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


@pytest.mark.parametrize("activation", ["relu", "soft_threshold", "tanh", "gelu"])
def test_lopt2_activations_give_finite_prompts(tiny_llama, activation):
    method = build_method("lopt2", tiny_llama, prompt_len=6, rank=3, activation=activation)
    X = method.prompt_matrix()
    assert torch.isfinite(X).all() and X.abs().sum() > 0


def test_vocab_init_uses_word_tokens_of_the_embedded_model(embedded):
    method = build_method("lopt2", embedded, prompt_len=20, rank=2)
    words = [embedded.tokenizer.decode([i]) for i in method.config.x0_token_ids]
    assert all(w.strip().isalpha() for w in words) and len(set(words)) == 20


def test_text_init_copies_the_texts_embeddings(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=7, init="text", init_text="abc")
    ids = tiny_llama.tokenizer("abc", add_special_tokens=False)["input_ids"]
    want = tiny_llama.embed(torch.tensor((ids * 3)[:7]))
    torch.testing.assert_close(method.prompt_matrix(), want)


def test_verbalizer_of_a_task_is_cached_per_tokenizer(tiny_llama):
    task = load_task("sentiment")
    assert task.verbalizer(tiny_llama.tokenizer) is task.verbalizer(tiny_llama.tokenizer)
    assert isinstance(task.verbalizer(tiny_llama.tokenizer), Verbalizer)
