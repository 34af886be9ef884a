"""Serving: cached prompt K/V give the same answers as the full forward, per task and mixed."""
import pytest
import torch

from lopt_core.generation import generate
from lopt_core.methods import build_method
from lopt_core.scoring import class_scores
from lopt_core.serving import Server
from lopt_core.tasks import Task, load_task

METHODS = {"zero_shot": {}, "prompt_tuning": {"prompt_len": 5}, "lopt1": {"prompt_len": 3, "rank": 2},
           "lopt2": {"prompt_len": 6, "rank": 2}, "prefix_tuning": {"prompt_len": 4, "reparam_dim": 8}}


def small_task(name="t"):
    rows = load_task("sentiment").examples("dev", 4)
    return Task(name, "classification", "{text} =", {"dev": rows}, label_words=("a", "b"), label_names=("neg", "pos"))


@pytest.fixture(scope="module")
def served(tiny_llama):
    server = Server(tiny_llama)
    methods = {}
    for name, options in METHODS.items():
        method = build_method(name, tiny_llama, seed=1, **options)
        with torch.no_grad():
            for p in method.parameters():
                p.add_(0.1 * torch.randn_like(p))  # as if trained
        methods[name] = method
        server.add(name, method, small_task(name))
    return server, methods


def test_cached_prompt_classification_equals_the_full_forward(served, tiny_llama):
    server, methods = served
    task = small_task()
    rows = task.examples("dev")
    for name, method in methods.items():
        got = server.classify([(name, task.prompt(r)) for r in rows])
        with torch.no_grad():
            want = class_scores(method, tiny_llama, task.collate(rows, tiny_llama.tokenizer),
                                task.verbalizer(tiny_llama.tokenizer)).softmax(-1)
        for g, w in zip(got, want):
            torch.testing.assert_close(torch.tensor(list(g["probabilities"].values())), w, atol=1e-5, rtol=1e-4)


def test_mixed_task_batch_equals_one_task_at_a_time(served):
    server, _ = served
    text = small_task().prompt(small_task().examples("dev", 1)[0])
    requests = [(name, text) for name in METHODS] + [("lopt2", "short =")]
    mixed = server.classify(requests)
    for request, got in zip(requests, mixed):
        alone = server.classify([request])[0]
        for a, b in zip(got["probabilities"].values(), alone["probabilities"].values()):
            assert a == pytest.approx(b, abs=1e-5)


def test_served_generation_equals_the_methods_generation(served, tiny_llama):
    server, methods = served
    prompts = ["Table: name : A\nText:", "Hi:"]
    mixed = server.generate([(name, p) for name in METHODS for p in prompts], max_new_tokens=5, banned=())
    expected = [text for name in METHODS for text in generate(methods[name], tiny_llama, prompts, 5, banned=())]
    assert mixed == expected
    beams = server.generate([("prefix_tuning", prompts[0]), ("lopt1", prompts[1])], max_new_tokens=4, num_beams=3,
                            banned=())
    assert len(beams) == 2


def test_input_dependent_methods_cannot_be_cached(tiny_llama):
    with pytest.raises(NotImplementedError, match="input-independent"):
        Server(tiny_llama).add("x", build_method("iapt", tiny_llama, bottleneck=4), small_task())


def test_unknown_task_is_a_clear_error(served):
    server, _ = served
    with pytest.raises(KeyError, match="served tasks"):
        server.classify([("nope", "x =")])


def test_multi_token_label_words_are_scored_as_sequences(tiny_llama):
    task = load_task("sentiment")  # " negative" / " positive" are several byte tokens here
    method = build_method("lopt1", tiny_llama, prompt_len=3, rank=2, seed=2)
    server = Server(tiny_llama)
    server.add("s", method, task)
    server.add("t", build_method("prompt_tuning", tiny_llama, prompt_len=2), small_task("t"))
    rows = task.examples("dev", 2)
    got = server.classify([("s", task.prompt(rows[0])), ("t", "x ="), ("s", task.prompt(rows[1]))])
    with torch.no_grad():
        want = class_scores(method, tiny_llama, task.collate(rows, tiny_llama.tokenizer),
                            task.verbalizer(tiny_llama.tokenizer)).softmax(-1)
    for g, w in zip([got[0], got[2]], want):
        torch.testing.assert_close(torch.tensor(list(g["probabilities"].values())), w, atol=1e-5, rtol=1e-4)
    assert got[1]["task"] == "t"
