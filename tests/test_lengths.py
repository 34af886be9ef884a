"""The length policy at every entry point, and empty inputs: cut from the left keeping BOS (with one
warning per call) or refused with an error naming the limit and the row; never an IndexError."""
import warnings

import pytest
import torch
from conftest import backbone, make, short_generation_task, short_task

from lopt_core.data.batching import LengthPolicy
from lopt_core.data.task import Task
from lopt_core.evaluation.decoding import generate_ids
from lopt_core.evaluation.evaluator import evaluate
from lopt_core.evaluation.scoring import class_scores, hidden_states
from lopt_core.training.trainer import TrainConfig, Trainer


def test_policy_keeps_bos_and_the_prompts_end_and_cuts_the_target_first():
    policy = LengthPolicy(10, bos_id=0)
    assert policy.fit([0, 1, 2, 3], [7, 8]) == ([0, 1, 2, 3], [7, 8])  # fits: untouched
    p, t = policy.fit([0] + list(range(1, 15)), [])  # a long prompt: BOS and the last 9 tokens
    assert p == [0, 6, 7, 8, 9, 10, 11, 12, 13, 14] and t == []
    p, t = policy.fit([0, 1, 2], list(range(100, 120)))  # a long target is cut, never the prompt
    assert p == [0, 1, 2] and t == list(range(100, 107))
    p, t = policy.fit([0] + list(range(1, 12)), list(range(100, 120)))  # both long: half each
    assert p == [0, 8, 9, 10, 11] and t == list(range(100, 105))
    assert policy.cut == [1, 2, 3]
    with pytest.warns(UserWarning, match=r"3 of 4 rows were longer than 10 tokens"):
        policy.warn()
    with pytest.raises(ValueError, match="row 7 has no room for its prompt: the limit is 2 tokens"):
        LengthPolicy(2, bos_id=0).fit([0, 1, 2], [5], row=7)


def test_a_target_longer_than_max_length_is_cut_not_the_prompt(tiny_llama):
    task = Task("t", "generation", "Table: {table}\nText:", {"train": [{"table": "name : A", "references": ["x"]}]})
    row = {"table": "name : A", "target": "y" * 300}
    with pytest.warns(UserWarning, match="1 of 1 rows"):
        batch = task.collate([row], tiny_llama.tokenizer, max_length=64)
    prompt = tiny_llama.tokenizer(task.prompt(row))["input_ids"]
    assert batch["input_ids"].shape[1] == 64 and batch["prompt_mask"].sum() == len(prompt)
    assert batch["input_ids"][0, :len(prompt)].tolist() == prompt


def test_generation_past_gpt2s_context_cuts_the_prompt_with_one_warning(tiny_gpt2):
    method = make("prompt_tuning", tiny_gpt2, perturb=0.3)  # 5 positions; 64 in all
    long = "word " * 30 + "Text:"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = generate_ids(method, tiny_gpt2, [long, "Hi", long], max_new_tokens=8, banned=())
    cuts = [w for w in caught if "rows were longer" in str(w.message)]
    assert len(cuts) == 1 and "2 of 3 rows were longer than 51 tokens" in str(cuts[0].message)
    kept = tiny_gpt2.tokenizer.decode(tiny_gpt2.tokenizer(long)["input_ids"][-51:])
    assert out[0] == out[2] == generate_ids(method, tiny_gpt2, [kept], max_new_tokens=8, banned=())[0]


def test_a_bos_tokenizer_keeps_bos_when_a_prompt_is_cut():
    bos = backbone("tiny-llama-bos")
    method = make("lopt1", bos, perturb=0.3)
    with pytest.warns(UserWarning, match="rows were longer than 500 tokens"):
        got = generate_ids(method, bos, ["x" * 600 + "Text:"], max_new_tokens=7, banned=())
    tail = "x" * 494 + "Text:"  # BOS + the last 499 tokens: 500 = 512 − 5 prompt positions − 7 new tokens
    assert got == generate_ids(method, bos, [tail], max_new_tokens=7, banned=())


def test_llama_past_max_position_embeddings_is_cut_by_evaluate_and_refused_raw(tiny_llama):
    task = Task("t", "classification", "{text} =", {"validation": [{"text": "y" * 600, "label": 0},
                                                              {"text": "ok", "label": 1}]}, label_words=("a", "b"))
    method = make("prefix_tuning", tiny_llama)
    with pytest.warns(UserWarning, match="evaluate t/validation: 1 of 2 rows were longer than 507 tokens"):
        assert evaluate(method, tiny_llama, task, "validation", max_length=1000)["n"] == 2  # 512 − 5 prefix positions
    batch = task.collate(task.splits["validation"], tiny_llama.tokenizer, max_length=1000)
    fit = r"1 of 2 rows do not fit tiny-llama.s context of 512 positions \(row 0 needs 607, counting 5 added"
    with pytest.raises(ValueError, match=fit):
        class_scores(method, tiny_llama, batch, task.verbalizer(tiny_llama.tokenizer))


def test_training_checks_every_row_before_step_1(tiny_gpt2, tmp_path):
    rows = [{"text": "word " * 20, "label": i % 2} for i in range(6)] + [{"text": "ok", "label": 0}] * 2
    task = Task("long", "classification", "{text} =", {"train": rows, "validation": rows[-2:]}, label_words=("a", "b"))
    config = TrainConfig(steps=2, batch_size=4, eval_every=2, progress=False)
    with pytest.warns(UserWarning, match=r"training long: 6 of 8 rows were longer than 59 tokens"):
        Trainer(make("prompt_tuning", tiny_gpt2), tiny_gpt2, task, config).fit()
    bos = backbone("tiny-llama-bos")
    gen = short_generation_task()
    with pytest.raises(ValueError, match="training short_gen row 0 has no room for its prompt"):
        Trainer(make("lopt1", bos), bos, gen, TrainConfig(steps=1, max_length=2, progress=False))
    with pytest.raises(ValueError, match="no room for an input.*context is 64 positions, the method adds 63"):
        Trainer(make("prompt_tuning", tiny_gpt2, prompt_len=63), tiny_gpt2, task, config)


@pytest.mark.parametrize("text", ["", "  ", "\t\n"])
def test_empty_text_anywhere_is_an_error_naming_it(tiny_llama, text):
    task = short_task()
    with pytest.raises(ValueError, match="empty text in the row"):
        task.collate([{"text": "fine", "label": 0}, {"text": text, "label": 1}], tiny_llama.tokenizer)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_ids(make("zero_shot", tiny_llama), tiny_llama, ["Hi", text], max_new_tokens=2)
    gen = short_generation_task()
    with pytest.raises(ValueError, match="empty target"):
        gen.collate([{"table": "name : A", "target": text}], tiny_llama.tokenizer)


def test_hidden_states_never_raise_index_errors_on_gpt2(tiny_gpt2):
    """A hand-made batch longer than the context: a ValueError naming the limit, not an IndexError (the scorer
    checks every batch before a method sees it)."""
    ids = torch.ones(1, 70, dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "prompt_mask": torch.ones_like(ids)}
    for label in ("zero_shot", "prompt_tuning", "prefix_tuning", "iapt"):
        with pytest.raises(ValueError, match="context of 64"):
            hidden_states(make(label, tiny_gpt2), tiny_gpt2, batch)
