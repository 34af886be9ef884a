"""Generation with every method: the first token is the forward pass's argmax, batching and
left padding change nothing, beams and banned tokens work; BLEU/ROUGE-L on known answers."""
import pytest
import torch

from lopt_core.generation import banned_token_ids, evaluate_generation, generate, generate_ids
from lopt_core.methods import build_method
from lopt_core.metrics import corpus_bleu, exact_match, rouge_l
from lopt_core.scoring import last_positions
from lopt_core.tasks import load_task

PROMPTS = ["Table: name : A | food : French\nText:", "Hi", "A longer prompt, about food and a restaurant\nText:"]
METHODS = {"zero_shot": {}, "prompt_tuning": {"prompt_len": 4}, "lopt1": {"prompt_len": 4, "rank": 2},
           "lopt2": {"prompt_len": 4, "rank": 2}, "prefix_tuning": {"prompt_len": 4, "reparam_dim": 8},
           "iapt": {"bottleneck": 8}}


@pytest.mark.parametrize("name", list(METHODS))
def test_first_generated_token_is_the_forward_argmax(name, tiny):
    method = build_method(name, tiny, **METHODS[name])
    enc = tiny.tokenizer(PROMPTS, return_tensors="pt", padding=True)  # right padding, as in training
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
             "prompt_mask": enc["attention_mask"]}
    with torch.no_grad():
        h = method.hidden_states(tiny, batch)
        want = tiny.logits(h[torch.arange(len(PROMPTS)), last_positions(enc["attention_mask"])]).argmax(-1)
    got = generate_ids(method, tiny, PROMPTS, max_new_tokens=3, banned=())
    assert [g[0] for g in got] == want.tolist()


@pytest.mark.parametrize("name", list(METHODS))
def test_batched_generation_equals_one_by_one(name, tiny):
    method = build_method(name, tiny, **METHODS[name])
    together = generate_ids(method, tiny, PROMPTS, max_new_tokens=6, banned=())
    alone = [generate_ids(method, tiny, [p], max_new_tokens=6, banned=())[0] for p in PROMPTS]
    assert together == alone


@pytest.mark.parametrize("name", ["prompt_tuning", "prefix_tuning"])
def test_beam_search_runs_and_one_beam_is_greedy(name, tiny_llama):
    method = build_method(name, tiny_llama, **METHODS[name])
    greedy = generate(method, tiny_llama, PROMPTS, max_new_tokens=5, banned=())
    assert generate(method, tiny_llama, PROMPTS, max_new_tokens=5, num_beams=1, banned=()) == greedy
    beams = generate(method, tiny_llama, PROMPTS, max_new_tokens=5, num_beams=5, banned=())
    assert len(beams) == len(PROMPTS) and all(isinstance(b, str) for b in beams)


def test_banned_tokens_are_never_generated(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=2)
    banned = set(banned_token_ids(tiny_llama, ("e", "a")))
    assert banned and all(set(tiny_llama.tokenizer.decode([i])) & {"e", "a"} for i in banned)
    for ids in generate_ids(method, tiny_llama, PROMPTS, max_new_tokens=8, banned=("e", "a")):
        assert not banned & set(ids)


def test_newline_tokens_of_the_embedded_model(embedded):
    ids = banned_token_ids(embedded)
    assert embedded.tokenizer("\n", add_special_tokens=False)["input_ids"][0] in ids
    assert all("\n" in embedded.tokenizer.decode([i]) for i in ids)


def test_bleu_and_rouge_on_known_answers():
    refs = [["the cat sat on the mat", "a cat was on the mat"], ["it is raining today"]]
    assert corpus_bleu(["the cat sat on the mat", "it is raining today"], refs) == pytest.approx(100.0)
    assert rouge_l(["a cat was on the mat", "it is raining today"], refs) == pytest.approx(100.0)
    assert corpus_bleu(["dogs bark", "sun"], refs) < 5
    assert 0 < rouge_l(["the cat", "raining"], refs) < 100
    with pytest.raises(ValueError, match="reference lists"):
        corpus_bleu(["x"], refs)
    assert exact_match(["Even.", "odd "], ["even", "even"]) == 0.5


def test_evaluate_generation_scores_every_source_against_all_references(tiny_llama):
    task = load_task("restaurant")
    method = build_method("prefix_tuning", tiny_llama, prompt_len=2, reparam_dim=8)
    result = evaluate_generation(method, tiny_llama, task, "test", limit=3, max_new_tokens=4)
    assert result["n"] == 3 and 0 <= result["bleu"] <= 100 and 0 <= result["rouge_l"] <= 100
    assert len(result["samples"]) == 3 and len(result["samples"][0]["references"]) >= 2


def test_instruction_scores_exact_match_closed_and_rouge_free():
    from lopt_core.generation import answer_type, instruction_scores

    rows = [{"task": "parity", "instruction": "i", "references": ["even"], "answer_type": "closed"},
            {"task": "parity", "instruction": "i", "references": ["odd"], "answer_type": "closed"},
            {"task": "describe", "instruction": "i", "references": ["a cosy pub by the river"], "answer_type": "free"}]
    scores = instruction_scores(rows, ["Even.", "even", "a cosy pub by the river"])
    assert scores["exact_match"] == 0.5 and scores["rouge_l_free"] == pytest.approx(100.0)
    assert scores["by_task"]["parity"] == {"metric": "exact_match", "score": 0.5, "n": 2}
    assert answer_type({"references": ["yes"]}) == "closed"
    assert answer_type({"references": ["a much longer free answer"]}) == "free"
