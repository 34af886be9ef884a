"""IAPT: generators, rational activation, exact insertion, caching and batching."""
import pytest
import torch

from lopt_core.backbone import load_backbone
from lopt_core.generation import generate_ids
from lopt_core.methods import build_method
from lopt_core.methods.rational import RationalActivation, fit_rational
from lopt_core.scoring import class_scores
from lopt_core.tasks import load_task
from lopt_core.train import TrainConfig, Trainer

ATOL, RTOL = 1e-5, 1e-4


def iapt(backbone, **options):
    return build_method("iapt", backbone, bottleneck=8, **{"seed": 0, **options})


def encode(backbone, prompt: str, response: str = ""):
    tok = backbone.tokenizer
    p = tok(prompt)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] if response else []
    ids = torch.tensor([p + r])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "prompt_mask": torch.tensor([[1] * len(p) + [0] * len(r)])}


def test_rational_activation_starts_as_gelu():
    x = torch.linspace(-3, 3, 2001)
    assert (RationalActivation()(x) - torch.nn.functional.gelu(x)).abs().max() <= 0.02
    a, b = fit_rational(torch.nn.functional.gelu)
    assert len(a) == 7 and len(b) == 5
    r = RationalActivation()
    assert all(p.requires_grad for p in r.parameters()) and sum(p.numel() for p in r.parameters()) == 12
    assert torch.isfinite(r(torch.tensor([-1e3, 1e3]))).all()  # no poles: Q >= 1


def naive_reference(method, backbone, prompt: str, response: str) -> torch.Tensor:
    """Deep prompts the slow way: the full sequence [instruction; k virtual; response] through the model,
    a hook at every layer overwriting the virtual positions' input with P^l from that layer's input."""
    tok = backbone.tokenizer
    p = tok(prompt)["input_ids"]
    instr, cue = p[:-1], p[-1:]
    resp = cue + tok(response, add_special_tokens=False)["input_ids"]
    k, Ti = method.config.num_virtual, len(instr)
    ids = torch.tensor([instr + [0] * k + resp])
    layers = backbone.transformer.layers if hasattr(backbone.transformer, "layers") else backbone.transformer.h
    handles = []
    for gen, layer in zip(method.generators, layers):
        def hook(module, args, kwargs, gen=gen):
            h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            h = h.clone()
            h[:, Ti:Ti + k] = gen(h[:, :Ti], torch.ones(1, Ti, dtype=torch.long))
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = h
                return args, kwargs
            return (h, *args[1:]), kwargs
        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        out = backbone.transformer(input_ids=ids).last_hidden_state
    finally:
        for h in handles:
            h.remove()
    return out[:, Ti + k:]


@pytest.mark.parametrize("pooling", ["attention", "mean", "last"])
def test_cached_insertion_equals_the_naive_deep_prompt(tiny, pooling):
    method = iapt(tiny, pooling=pooling)
    prompt, response = "Is this positive? I loved it.\nAnswer:", " yes"
    batch = encode(tiny, prompt, response)
    ours = method.hidden_states(tiny, batch)
    n_instr = len(tiny.tokenizer(prompt)["input_ids"]) - 1
    torch.testing.assert_close(ours[:, n_instr:], naive_reference(method, tiny, prompt, response), atol=ATOL, rtol=RTOL)


def test_changing_the_response_does_not_change_the_prompts(tiny_llama):
    method = iapt(tiny_llama)
    a = method.split(tiny_llama, encode(tiny_llama, "Summarise: the cat sat.\nText:", " a cat"))
    b = method.split(tiny_llama, encode(tiny_llama, "Summarise: the cat sat.\nText:", " nothing like it at all"))
    _, pa, _ = method.prompts(tiny_llama, a)
    _, pb, _ = method.prompts(tiny_llama, b)
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)


def test_pooling_weights_cover_only_instruction_tokens(tiny_llama):
    gen = iapt(tiny_llama).generators[0]
    Z = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    A = gen.pool_weights(Z, mask)
    assert A.shape == (2, 6, 4)
    assert torch.equal(A[0, 3:], torch.zeros(3, 4)) and torch.equal(A[1, 5:], torch.zeros(1, 4))
    torch.testing.assert_close(A.sum(1), torch.ones(2, 4))


@pytest.mark.parametrize("task_name", ["sentiment", "restaurant"])
def test_batches_of_different_instruction_lengths_match_one_by_one(tiny, task_name):
    method = iapt(tiny)
    task = load_task(task_name)
    rows = [{**r, "target": r["references"][0]} if "references" in r else r for r in task.examples("train", 3)]
    batch = task.collate(rows, tiny.tokenizer)
    assert len(set(batch["prompt_mask"].sum(1).tolist())) > 1  # different instruction lengths
    together = method.hidden_states(tiny, batch)
    for i, row in enumerate(rows):
        alone = method.hidden_states(tiny, task.collate([row], tiny.tokenizer))
        n = int(batch["attention_mask"][i].sum())
        torch.testing.assert_close(together[i, :n], alone[0, :n], atol=ATOL, rtol=RTOL)
    if task.kind == "classification":
        verb = task.verbalizer(tiny.tokenizer)
        scores = class_scores(method, tiny, batch, verb)
        for i, row in enumerate(rows):
            one = class_scores(method, tiny, task.collate([row], tiny.tokenizer), verb)
            torch.testing.assert_close(scores[i], one[0], atol=ATOL, rtol=RTOL)


def test_generation_with_cached_prompts_equals_a_full_recompute(tiny):
    method = iapt(tiny)
    prompts = ["Say something about food\nText:", "Hi:"]
    cached = generate_ids(method, tiny, prompts, max_new_tokens=5, banned=())
    for prompt, got in zip(prompts, cached):
        tokens = []
        for _ in range(5):  # recompute everything, prompts included, for every new token
            batch = encode(tiny, prompt)
            if tokens:
                extra = torch.tensor([tokens])
                batch = {"input_ids": torch.cat([batch["input_ids"], extra], 1),
                         "attention_mask": torch.ones(1, batch["input_ids"].shape[1] + len(tokens), dtype=torch.long),
                         "prompt_mask": torch.cat([batch["prompt_mask"], torch.zeros_like(extra)], 1)}
            with torch.no_grad():
                h = method.hidden_states(tiny, batch)
            tokens.append(int(tiny.logits(h[0, -1]).argmax()))
            if tokens[-1] == tiny.tokenizer.eos_token_id:
                break
        assert got == tokens


def test_beam_search_with_iapt_runs(tiny_llama):
    out = generate_ids(iapt(tiny_llama), tiny_llama, ["Hello there\nText:", "Hi:"], max_new_tokens=4, num_beams=3,
                       banned=())
    assert len(out) == 2 and all(len(o) >= 1 for o in out)


def test_parameter_count_closed_form(tiny_llama, embedded):
    L, d = 2, 64
    assert iapt(tiny_llama).trainable_parameters() == L * (2 * d * 8 + 4 * 8) + L * 12
    assert iapt(tiny_llama, pooling="mean", activation="gelu").trainable_parameters() == L * (2 * d * 8)
    full = build_method("iapt", embedded)
    assert full.trainable_parameters() == full.parameter_formula() == 30 * (2 * 576 * 32 + 4 * 32) + 30 * 12


def test_prompts_start_at_the_scale_of_real_hidden_states(embedded):
    method = build_method("iapt", embedded)
    parts = method.split(embedded, encode(embedded, "Classify the sentiment: a lovely film.\nAnswer:"))
    with torch.no_grad():
        _, prompts, out = method.prompts(embedded, parts)
    for layer in (1, 15, 29):
        real = out.hidden_states[layer][0, 1:].pow(2).mean(-1).sqrt().median()
        made = prompts[layer].pow(2).mean(-1).sqrt().mean()
        assert 0.2 < float(made / real) < 5, layer


def test_bad_configs_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="pooling must be one of"):
        iapt(tiny_llama, pooling="max")
    with pytest.raises(ValueError, match="activation='rational'"):
        iapt(tiny_llama, activation="gelu", bilevel=True)
    method = iapt(tiny_llama)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        method.hidden_states(tiny_llama, encode(tiny_llama, "a"))


def test_bilevel_trains_the_rational_coefficients_on_dev_batches(tiny_llama, tmp_path):
    task = load_task("sentiment")
    task.splits = {k: v[:16] for k, v in task.splits.items()}
    method = iapt(tiny_llama, bilevel=True, bilevel_lr=0.05)
    before = [p.detach().clone() for p in method.outer_parameters()]
    down = method.generators[0].down.weight.detach().clone()
    config = TrainConfig(steps=3, batch_size=4, eval_every=3, eval_limit=4, progress=False)
    result = Trainer(method, tiny_llama, task, config, run_dir=tmp_path).fit()
    assert "outer_loss" in result.history and result.history["outer_loss"].notna().all()
    assert any(not torch.equal(b, p) for b, p in zip(before, method.outer_parameters()))
    assert not torch.equal(down, method.generators[0].down.weight)
    again = iapt(tiny_llama, bilevel=True, bilevel_lr=0.05)
    Trainer(again, tiny_llama, task, config).fit()
    for p, q in zip(method.parameters(), again.parameters()):
        assert torch.equal(p, q)  # deterministic, dev batches included


def test_iapt_prompts_depend_on_the_instruction(tiny_llama):
    method = iapt(tiny_llama)
    _, a, _ = method.prompts(tiny_llama, method.split(tiny_llama, encode(tiny_llama, "Translate this.\nOut:")))
    _, b, _ = method.prompts(tiny_llama, method.split(tiny_llama, encode(tiny_llama, "Count the words.\nOut:")))
    assert not torch.allclose(a[1], b[1])


def test_load_backbone_fixture_sanity():
    assert load_backbone("tiny-llama").num_kv_heads == 2
