"""Serving specifics: unknown tasks, methods that cannot be cached, multi-token label words, empty and
over-long requests. (Serving = the method's own forward, mixed batches and served generation, on every
backbone, are in test_contract.py.)"""
import pytest
import torch
from conftest import ATOL, RTOL, backbone, make, short_task

from lopt_core.evaluation.scoring import class_scores
from lopt_core.methods import build_method
from lopt_core.serving.server import Server


@pytest.fixture(scope="module")
def served(tiny_llama):
    server = Server(tiny_llama)
    server.add("pt", make("prompt_tuning", tiny_llama, perturb=0.3), short_task("pt"))
    return server


def test_input_dependent_methods_cannot_be_cached(tiny_llama):
    with pytest.raises(NotImplementedError, match="input-independent"):
        Server(tiny_llama).add("x", build_method("iapt", tiny_llama, bottleneck=4), short_task())


def test_unknown_task_is_a_clear_error(served):
    with pytest.raises(KeyError, match="served tasks"):
        served.classify([("nope", "x =")])


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_requests_are_refused_by_index(served, text):
    with pytest.raises(ValueError, match=r"request 0 \('pt'\) is empty"):
        served.classify([("pt", text), ("pt", "x =")])
    with pytest.raises(ValueError, match=r"request 1 \('pt'\) is empty"):
        served.classify([("pt", "x ="), ("pt", text)])
    with pytest.raises(ValueError, match="is empty"):
        served.classify([("pt", text)])
    with pytest.raises(ValueError, match="is empty"):
        served.generate([("pt", text)], max_new_tokens=2)


def test_requests_longer_than_the_context_are_refused_naming_the_limit(tiny_gpt2):
    server = Server(tiny_gpt2)
    server.add("pt", make("prompt_tuning", tiny_gpt2), short_task("pt"))
    long = "x" * 60  # 60 byte tokens + 5 prompt positions > 64
    with pytest.raises(ValueError, match=r"request 1 \('pt'\) needs 65 positions .* tiny-gpt2 has 64"):
        server.classify([("pt", "ok ="), ("pt", long)])
    with pytest.raises(ValueError, match=r"needs 65 positions \(5 of its task's prompt, 20 of text, 40 to generate\)"):
        server.generate([("pt", "x" * 20)], max_new_tokens=40)
    assert len(server.generate([("pt", "x" * 20)], max_new_tokens=39)) == 1


def test_multi_token_label_words_are_scored_as_sequences(tiny_llama):
    task = short_task((" good", " bad"))
    method = make("lopt1", tiny_llama, perturb=0.3, seed=2)
    server = Server(tiny_llama)
    server.add("s", method, task)
    server.add("t", build_method("prompt_tuning", tiny_llama, prompt_len=2), short_task(name="t"))
    rows = task.examples("train", 2)
    got = server.classify([("s", task.prompt(rows[0])), ("t", "x ="), ("s", task.prompt(rows[1]))])
    with torch.no_grad():
        want = class_scores(method, tiny_llama, task.collate(rows, tiny_llama.tokenizer),
                            task.verbalizer(tiny_llama.tokenizer)).softmax(-1)
    for g, w in zip([got[0], got[2]], want, strict=True):
        torch.testing.assert_close(torch.tensor(list(g["probabilities"].values())), w, atol=ATOL, rtol=RTOL)
    assert got[1]["task"] == "t"


def test_a_bos_tokenizer_serves_the_prompt_after_bos():
    """The cached prompt is [BOS][X] and a request goes in without its own BOS: as in training."""
    bos = backbone("tiny-llama-bos")
    server = Server(bos)
    method = make("lopt2", bos, perturb=0.3)
    entry = server.add("s", method, short_task())
    assert entry.prompt.includes_bos and entry.length == 1 + method.config.prompt_len
    task = short_task()
    rows = task.examples("train", 3)
    got = server.classify([("s", task.prompt(r)) for r in rows])
    with torch.no_grad():
        want = class_scores(method, bos, task.collate(rows, bos.tokenizer), task.verbalizer(bos.tokenizer)).softmax(-1)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(torch.tensor(list(g["probabilities"].values())), w, atol=ATOL, rtol=RTOL)
