"""Generation specifics: beam search against transformers' own, banned tokens, decoding an IAPT cache
against a full recompute, BLEU/ROUGE-L on known answers. (Batching, padding and the first token, for
every method on every backbone, are in test_contract.py.)"""
import pytest
import torch
from conftest import backbone, make, short_generation_task

from lopt_core.evaluation.decoding import banned_token_ids, generate, generate_ids
from lopt_core.evaluation.evaluator import evaluate_generation
from lopt_core.evaluation.metrics import corpus_bleu, exact_match, rouge_l
from lopt_core.methods import build_method
from lopt_core.methods.base import adds_bos

PROMPTS = ["Table: name : A | food : French\nText:", "Hi", "A longer prompt, about food\nText:"]


@pytest.mark.parametrize("label", ["zero_shot", "prompt_tuning"])
@pytest.mark.parametrize("beams", [1, 4])
def test_decoding_equals_transformers_generate_on_the_same_inputs_embeds(label, beams, tiny):
    """The reference is transformers' own generate, given the full sequence as inputs_embeds
    ([BOS][X][text] for a BOS tokenizer) and left to build its own cache (sliding layers included)."""
    method = make(label, tiny, perturb=0.3)
    for prompt in PROMPTS:
        ours = generate_ids(method, tiny, [prompt], max_new_tokens=6, num_beams=beams, banned=(), length_penalty=1.0)[0]
        ids = torch.tensor([tiny.tokenizer(prompt)["input_ids"]])
        embeds = tiny.embed(ids)
        if label == "prompt_tuning":
            X = method.input_prompt().detach()[None]
            at = 1 if adds_bos(tiny) else 0
            embeds = torch.cat([embeds[:, :at], X, embeds[:, at:]], dim=1)
        tok = tiny.tokenizer
        with torch.no_grad():
            theirs = tiny.model.generate(
                inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), max_new_tokens=6,
                num_beams=beams, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            theirs = theirs[0].tolist()
        if tok.eos_token_id in theirs:
            theirs = theirs[: theirs.index(tok.eos_token_id) + 1]
        assert ours == theirs, prompt


def test_banned_tokens_are_never_generated(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=2)
    banned = set(banned_token_ids(tiny_llama, ("e", "a")))
    assert banned and all(set(tiny_llama.tokenizer.decode([i])) & {"e", "a"} for i in banned)
    for ids in generate_ids(method, tiny_llama, PROMPTS, max_new_tokens=8, banned=("e", "a")):
        assert not banned & set(ids)


@pytest.mark.slow
def test_newline_tokens_of_the_embedded_model(embedded):
    ids = banned_token_ids(embedded)
    assert embedded.tokenizer("\n", add_special_tokens=False)["input_ids"][0] in ids
    assert all("\n" in embedded.tokenizer.decode([i]) for i in ids)


def test_iapt_decoding_equals_a_full_recompute_at_every_step(tiny):
    """The generated prompts are computed once at prefill and then live in the cache: each new token
    must be what re-running everything (prompts included) on the sequence so far predicts."""
    method = make("iapt", tiny, perturb=0.3)
    tok = tiny.tokenizer
    for prompt in ["Say something about food\nText:", "Hi:"]:
        got = generate_ids(method, tiny, [prompt], max_new_tokens=5, banned=())[0]
        p = tok(prompt)["input_ids"]
        tokens = []
        for _ in range(5):
            ids = torch.tensor([p + tokens])
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                     "prompt_mask": torch.tensor([[1] * len(p) + [0] * len(tokens)])}
            with torch.no_grad():
                tokens.append(int(tiny.logits(method.hidden_states(tiny, batch)[0, -1]).argmax()))
            if tokens[-1] == tok.eos_token_id:
                break
        assert got == tokens


def test_bleu_and_rouge_on_known_answers():
    refs = [["the cat sat on the mat", "a cat was on the mat"], ["it is raining today"]]
    assert corpus_bleu(["the cat sat on the mat", "it is raining today"], refs) == pytest.approx(100.0)
    assert rouge_l(["a cat was on the mat", "it is raining today"], refs) == pytest.approx(100.0)
    assert corpus_bleu(["dogs bark", "sun"], refs) < 5
    assert 0 < rouge_l(["the cat", "raining"], refs) < 100
    with pytest.raises(ValueError, match="reference lists"):
        corpus_bleu(["x"], refs)
    assert exact_match(["Even.", "odd "], ["even", "even"]) == 0.5


def test_evaluate_generation_scores_each_output_against_its_own_references():
    """Outputs are generated in length order and must come back to their own sources: the scores equal
    those of generating row by row."""
    tiny = backbone("tiny-llama-bos")
    task = short_generation_task()
    task.splits["test"] = task.splits["train"] + task.splits["test"]
    method = make("prefix_tuning", tiny, perturb=0.5)
    result = evaluate_generation(method, tiny, task, "test", max_new_tokens=6)
    rows = task.examples("test")
    by_hand = [generate(method, tiny, [task.prompt(r)], 6)[0] for r in rows]
    refs = [r["references"] for r in rows]
    assert result["n"] == 4 and result["bleu"] == pytest.approx(corpus_bleu(by_hand, refs))
    assert result["rouge_l"] == pytest.approx(rouge_l(by_hand, refs))
    assert [s["output"] for s in result["samples"]] == by_hand


def test_instruction_scores_exact_match_closed_and_rouge_free():
    from lopt_core.evaluation.evaluator import answer_type, instruction_scores

    rows = [{"task": "parity", "instruction": "i", "references": ["even"], "answer_type": "closed"},
            {"task": "parity", "instruction": "i", "references": ["odd"], "answer_type": "closed"},
            {"task": "describe", "instruction": "i", "references": ["a cosy pub by the river"], "answer_type": "free"}]
    scores = instruction_scores(rows, ["Even.", "even", "a cosy pub by the river"])
    assert scores["exact_match"] == 0.5 and scores["rouge_l_free"] == pytest.approx(100.0)
    assert scores["by_task"]["parity"] == {"metric": "exact_match", "score": 0.5, "n": 2}
    assert answer_type({"references": ["yes"]}) == "closed"
    assert answer_type({"references": ["a much longer free answer"]}) == "free"
