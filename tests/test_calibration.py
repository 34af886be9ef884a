"""Contextual calibration (Zhao et al., 2021) on a case whose bias is known: a label-word bias in the LM head."""
import copy

import pytest
import torch
from conftest import backbone, make, short_task

from lopt_core.evaluation.evaluator import evaluate
from lopt_core.evaluation.scoring import calibrated, content_free_probs


def biased(bb, token_id: int, bias: float):
    """The same backbone with ``bias`` added to one vocabulary entry's logit (an LM-head bias), so the scorer
    prefers that label word by a known, input-independent amount."""
    out = copy.copy(bb)
    out.model = copy.deepcopy(bb.model)
    head = out.model.get_output_embeddings()
    head.bias = torch.nn.Parameter(torch.zeros(head.weight.shape[0]))
    with torch.no_grad():
        head.bias[token_id] = bias
    return out


@pytest.mark.parametrize("label", ["zero_shot", "prompt_tuning"])
def test_calibration_removes_a_known_label_bias_exactly(label):
    bb, task = backbone("tiny-llama"), short_task()
    task.splits["test"] = task.splits["train"] + task.splits["test"]  # 12 rows, 6 of each class
    method = make(label, bb, perturb=0.05)
    words = task.verbalizer(bb.tokenizer).token_ids
    skewed = biased(bb, words[0][0], 8.0)
    plain = evaluate(method, bb, task, "test")
    leaning = evaluate(method, skewed, task, "test")
    assert leaning["accuracy"] == 0.5 and leaning["macro_f1"] == pytest.approx(1 / 3)  # every row: class 0
    fixed = evaluate(method, skewed, task, "test", calibrate="N/A")
    # the bias is input-independent, so dividing by the content-free probabilities cancels it: the calibrated
    # scores with and without the bias are the same
    unbiased = evaluate(method, bb, task, "test", calibrate="N/A")
    p_cf = fixed.pop("calibration")["p_content_free"]
    unbiased.pop("calibration")
    assert fixed == pytest.approx(unbiased) and p_cf[0] > 0.99
    assert plain["n"] == fixed["n"] == 12


@pytest.mark.slow
def test_calibration_gives_back_what_a_label_bias_took_on_the_embedded_backbone(embedded):
    from lopt_core.data import load_task
    from lopt_core.methods import build_method

    task, method = load_task("sentiment"), build_method("zero_shot", embedded)
    negative = task.verbalizer(embedded.tokenizer).token_ids[0][0]
    skewed = biased(embedded, negative, 6.0)
    plain = evaluate(method, embedded, task, "test", limit=48)
    leaning = evaluate(method, skewed, task, "test", limit=48)
    fixed = evaluate(method, skewed, task, "test", limit=48, calibrate="N/A")
    assert plain["accuracy"] > 0.85 and leaning["macro_f1"] < 0.5  # the bias makes nearly every row negative
    assert fixed["macro_f1"] > 0.8 and fixed["accuracy"] == evaluate(method, embedded, task, "test", limit=48,
                                                                    calibrate="N/A")["accuracy"]


def test_calibrated_probabilities_are_divided_by_the_content_free_ones():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    p_cf = torch.tensor([0.5, 0.3, 0.2])
    expected = scores.softmax(-1) / p_cf
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(calibrated(scores, p_cf).exp(), expected)


def test_content_free_inputs_are_checked(tiny_llama):
    task, method = short_task(), make("zero_shot", tiny_llama)
    with pytest.raises(ValueError, match="content-free text '' is empty; use a text that carries no content"):
        content_free_probs(method, tiny_llama, task, "")
    both = content_free_probs(method, tiny_llama, task, ["N/A", "[MASK]"])
    one = [content_free_probs(method, tiny_llama, task, t) for t in ("N/A", "[MASK]")]
    torch.testing.assert_close(both, (one[0] + one[1]) / 2)
    assert both.sum().item() == pytest.approx(1.0)
