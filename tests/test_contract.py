"""Contract tests: every method of the table × every tiny backbone (``conftest.METHODS`` × ``TINY_SPECS``)."""
import pytest
import torch
from conftest import ATOL, CACHEABLE, METHODS, RTOL, TRAINABLE, batch_of, make, short_generation_task, short_task

from lopt_core.data.batching import pad
from lopt_core.evaluation.decoding import generate_ids
from lopt_core.evaluation.scoring import class_scores, last_positions, loss_and_scores
from lopt_core.methods import list_methods, load_method, save_method
from lopt_core.serving.interop import prompt_embeddings
from lopt_core.serving.server import Server
from lopt_core.training.trainer import TrainConfig, Trainer

PROMPTS = ["Table: name : A | food : French\nText:", "Hi", "A longer prompt, about food\nText:"]


def test_the_matrix_covers_every_registered_method():
    assert {name for name, _ in METHODS.values()} == set(list_methods())


@pytest.mark.parametrize("label", list(METHODS))
def test_hidden_states_align_with_the_input(label, tiny):
    method = make(label, tiny)
    batch = batch_of(short_task(), tiny)
    h = method.hidden_states(tiny, batch)
    assert h.shape == (*batch["input_ids"].shape, tiny.hidden_size)
    n = method.config.prompt_len
    if method.prompt_kind == "input":
        assert method.input_prompt().shape == (n, tiny.hidden_size)
    elif method.prompt_kind == "kv":
        assert method.kv_table().shape == (n, tiny.num_layers * 2 * tiny.num_kv_heads * tiny.head_dim)


@pytest.mark.parametrize("label", TRAINABLE)
@pytest.mark.parametrize("make_task", [short_task, short_generation_task], ids=["classification", "generation"])
def test_gradients_reach_only_the_methods_parameters(label, make_task, tiny):
    """At a trained-like point (perturbed): at some starts a factor's gradient is zero by construction (the residual
    LoPT-1 starts at U = 0, so ∂L/∂V = Uᵀ ∂L/∂X = 0 on its first step), which says nothing about the wiring."""
    method = make(label, tiny, perturb=0.05)  # as if trained: a branch that starts at zero (residual prompt tuning's
    # MLP, as LoRA's B = 0) passes no gradient to the layers before it until it has moved
    task = make_task()
    loss, _ = loss_and_scores(method, tiny, batch_of(task, tiny), task)
    loss.backward()
    for p in tiny.model.parameters():
        assert p.grad is None and not p.requires_grad
    for pname, p in method.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, pname
    assert all(not b.requires_grad for b in method.buffers())


@pytest.mark.parametrize("label", list(METHODS))
def test_counted_parameters_equal_the_closed_form(label, tiny):
    method = make(label, tiny)
    assert method.trainable_parameters() == method.parameter_formula()


@pytest.mark.parametrize("label", TRAINABLE)
def test_save_load_round_trip_is_exact(label, tiny, tmp_path):
    method = make(label, tiny, perturb=1.0, seed=3)
    save_method(method, tmp_path, tiny.name)
    again = load_method(tmp_path, tiny)
    assert type(again) is type(method) and again.config == method.config
    for (k, v), (k2, v2) in zip(method.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    if method.peft_type is not None:
        assert torch.equal(prompt_embeddings(method), prompt_embeddings(again))
    batch = batch_of(short_task(), tiny)
    assert torch.equal(method.hidden_states(tiny, batch), again.hidden_states(tiny, batch))
    assert not list(tmp_path.glob(".*tmp"))


class Interrupt:
    def __init__(self, at):
        self.at = at

    def __call__(self, trainer, record):
        if record["step"] == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("label", TRAINABLE)
def test_resume_continues_bit_exactly(label, tiny, tmp_path):
    """Interrupted after step 4 and resumed: the same losses, parameters and optimiser states (the
    prefix MLP and IAPT's outer optimiser included) as a run that never stopped."""
    config = TrainConfig(steps=6, batch_size=4, lr=0.05, eval_every=3, eval_limit=4, progress=False)
    task = short_task()
    straight = make(label, tiny)
    reference = Trainer(straight, tiny, task, config).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(make(label, tiny), tiny, task, config, run_dir=tmp_path, callbacks=(Interrupt(4),)).fit()
    resumed = make(label, tiny)
    trainer = Trainer(resumed, tiny, task, config, run_dir=tmp_path)
    result = trainer.fit(resume=True)
    assert result.history["step"].tolist() == list(range(1, 7))
    assert result.history["loss"].tolist() == reference.history["loss"].tolist()
    if "outer_loss" in reference.history:
        assert result.history["outer_loss"].tolist() == reference.history["outer_loss"].tolist()
    for (k, v), (_, w) in zip(resumed.state_dict().items(), straight.state_dict().items(), strict=True):
        assert torch.equal(v, w), k


@pytest.mark.parametrize("label", list(METHODS))
@pytest.mark.parametrize("words", [("a", "b"), (" good", " bad")], ids=["one-token", "multi-token"])
def test_scores_of_a_batch_equal_the_rows_alone(label, words, tiny):
    method = make(label, tiny, perturb=0.3)
    task = short_task(words)
    rows = task.examples("train", 5)
    verb = task.verbalizer(tiny.tokenizer)
    together = class_scores(method, tiny, task.collate(rows, tiny.tokenizer), verb)
    for i, row in enumerate(rows):
        alone = class_scores(method, tiny, task.collate([row], tiny.tokenizer), verb)
        torch.testing.assert_close(together[i], alone[0], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("label", list(METHODS))
def test_a_left_padded_batch_is_refused(label, tiny):
    method = make(label, tiny)
    task = short_task()
    tok = tiny.tokenizer
    ids, mask = pad([tok(task.prompt(r))["input_ids"] for r in task.examples("train", 3)], tok.pad_token_id, "left")
    with pytest.raises(ValueError, match="not right-padded"):
        class_scores(method, tiny, {"input_ids": ids, "attention_mask": mask, "prompt_mask": mask},
                     task.verbalizer(tok))


@pytest.mark.parametrize("label", list(METHODS))
def test_first_generated_token_is_the_forward_argmax(label, tiny):
    method = make(label, tiny, perturb=0.3)
    tok = tiny.tokenizer
    ids, mask = pad([tok(p)["input_ids"] for p in PROMPTS], tok.pad_token_id)  # right padding, as in training
    with torch.no_grad():
        h = method.hidden_states(tiny, {"input_ids": ids, "attention_mask": mask, "prompt_mask": mask})
        want = tiny.logits(h[torch.arange(len(PROMPTS)), last_positions(mask)]).argmax(-1)
    got = generate_ids(method, tiny, PROMPTS, max_new_tokens=2, banned=())
    assert [g[0] for g in got] == want.tolist()


@pytest.mark.parametrize("label", list(METHODS))
@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_batched_generation_equals_one_by_one(label, beams, tiny):
    method = make(label, tiny, perturb=0.3)
    together = generate_ids(method, tiny, PROMPTS, max_new_tokens=6, num_beams=beams, banned=())
    alone = [generate_ids(method, tiny, [p], max_new_tokens=6, num_beams=beams, banned=())[0] for p in PROMPTS]
    assert together == alone


@pytest.fixture(scope="module")
def servers():
    """One server per tiny backbone, holding every cacheable method of the table for its own task."""
    from conftest import backbone

    built = {}

    def get(spec):
        if spec not in built:
            bb = backbone(spec)
            server, methods = Server(bb), {}
            for label in CACHEABLE:
                methods[label] = make(label, bb, perturb=0.3, seed=1)
                server.add(label, methods[label], short_task(name=label))
            built[spec] = (server, methods)
        return built[spec]
    return get


def test_serving_equals_the_methods_own_forward(tiny, servers):
    server, methods = servers(tiny.name)
    task = short_task()
    rows = task.examples("train", 4)
    for label, method in methods.items():
        got = server.classify([(label, task.prompt(r)) for r in rows])
        with torch.no_grad():
            want = class_scores(method, tiny, task.collate(rows, tiny.tokenizer),
                                task.verbalizer(tiny.tokenizer)).softmax(-1)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(torch.tensor(list(g["probabilities"].values())), w, atol=ATOL, rtol=RTOL)


def test_a_mixed_task_batch_equals_one_task_at_a_time(tiny, servers):
    server, _ = servers(tiny.name)
    requests = [(label, "loved it! =") for label in CACHEABLE] + [("lopt2", "no =")]
    mixed = server.classify(requests)
    for request, got in zip(requests, mixed, strict=True):
        alone = server.classify([request])[0]
        torch.testing.assert_close(torch.tensor(list(got["probabilities"].values())),
                                   torch.tensor(list(alone["probabilities"].values())), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_served_generation_equals_the_methods_generation(beams, tiny, servers):
    from lopt_core.evaluation.decoding import generate

    server, methods = servers(tiny.name)
    mixed = server.generate([(label, p) for label in CACHEABLE for p in PROMPTS[:2]], max_new_tokens=5,
                            num_beams=beams, banned=())
    expected = [text for label in CACHEABLE
                for text in generate(methods[label], tiny, PROMPTS[:2], 5, num_beams=beams, banned=())]
    assert mixed == expected
