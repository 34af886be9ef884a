"""IAPT: generators, rational activation, exact insertion, the bi-level option. (Batching, generation
and resume for IAPT on every backbone are in test_contract.py.)"""
import pytest
import torch
import torch.nn.functional as F
from conftest import ATOL, RTOL, short_generation_task, short_task

from lopt_core.data import load_task
from lopt_core.methods import build_method
from lopt_core.methods.iapt.rational import RationalActivation, fit_rational
from lopt_core.training.trainer import TrainConfig, Trainer


def iapt(backbone, **options):
    return build_method("iapt", backbone, bottleneck=8, **{"seed": 0, **options})


def encode(backbone, prompt: str, response: str = ""):
    tok = backbone.tokenizer
    p = tok(prompt)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] if response else []
    ids = torch.tensor([p + r])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "prompt_mask": torch.tensor([[1] * len(p) + [0] * len(r)])}


def test_rational_activation_starts_as_gelu_to_the_stated_error():
    x = torch.linspace(-3, 3, 2001)
    r = RationalActivation()
    assert (r(x) - F.gelu(x)).abs().max() <= 1e-4  # the docstring's 7.5e-5 on [-3, 3]
    a, b = fit_rational(F.gelu)
    assert len(a) == 7 and len(b) == 5
    assert all(p.requires_grad for p in r.parameters()) and sum(p.numel() for p in r.parameters()) == 12
    assert torch.isfinite(r(torch.tensor([-1e3, 1e3]))).all()  # no poles: Q >= 1


def test_rational_activation_outside_the_fitted_interval_is_as_documented():
    r = RationalActivation()
    x = torch.tensor([-10.0, -6.0, 6.0, 10.0])
    gap = (r(x) - F.gelu(x)).tolist()
    assert gap == pytest.approx([1.83, 0.22, 0.22, 1.83], abs=0.01)


def test_other_orders_fit_the_form_the_forward_uses():
    """The linearised fit assumes Q = 1 + B; the forward uses 1 + |B|. For (4, 4) the linear fit alone
    starts 0.052 off; after the refinement on the true form, under 0.005."""
    x = torch.linspace(-3, 3, 2001)
    assert (RationalActivation(4, 4)(x) - F.gelu(x)).abs().max() < 0.005
    assert (RationalActivation(5, 4)(x) - F.gelu(x)).abs().max() < 0.001


def test_rational_activation_and_pooling_run_in_fp32_under_autocast(tiny_llama):
    x = torch.linspace(-3, 3, 2001)
    r = RationalActivation()
    xb = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside, exact = r(xb), r._fp32(x)
    assert torch.equal(inside, r(xb.float()).bfloat16())  # computed in fp32, only the result rounded to bf16
    assert exact.dtype == torch.float32 and (exact - F.gelu(x)).abs().max() <= 1e-4  # 0.026 when run in bf16
    gen = iapt(tiny_llama).generators[0]
    Z = torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        A = gen.pool_weights(Z.bfloat16(), mask)
    assert A.dtype == torch.float32


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
    for gen, layer in zip(method.generators, layers, strict=True):
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
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x, y)


def test_pooling_weights_cover_only_instruction_tokens(tiny_llama):
    gen = iapt(tiny_llama).generators[0]
    Z = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    A = gen.pool_weights(Z, mask)
    assert A.shape == (2, 6, 4)
    assert torch.equal(A[0, 3:], torch.zeros(3, 4)) and torch.equal(A[1, 5:], torch.zeros(1, 4))
    torch.testing.assert_close(A.sum(1), torch.ones(2, 4))


@pytest.mark.parametrize("make_task", [short_task, short_generation_task], ids=["classification", "generation"])
def test_hidden_states_of_a_batch_equal_the_rows_alone(tiny, make_task):
    """Instructions of different lengths (left-padded inside IAPT) and responses (right-padded)."""
    method = iapt(tiny)
    task = make_task()
    rows = task.examples("train", 3, expand_references=True)[:3]
    batch = task.collate(rows, tiny.tokenizer)
    assert len(set(batch["prompt_mask"].sum(1).tolist())) > 1  # different instruction lengths
    together = method.hidden_states(tiny, batch)
    for i, row in enumerate(rows):
        alone = method.hidden_states(tiny, task.collate([row], tiny.tokenizer))
        n = int(batch["attention_mask"][i].sum())
        torch.testing.assert_close(together[i, :n], alone[0, :n], atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_parameter_count_closed_form(tiny_llama, embedded):
    L, d = 2, 64
    assert iapt(tiny_llama).trainable_parameters() == L * (2 * d * 8 + 4 * 8) + L * 12
    assert iapt(tiny_llama, pooling="mean", activation="gelu").trainable_parameters() == L * (2 * d * 8)
    full = build_method("iapt", embedded)
    assert full.trainable_parameters() == full.parameter_formula() == 30 * (2 * 576 * 32 + 4 * 32) + 30 * 12


@pytest.mark.slow
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
    with pytest.raises(ValueError, match="row 0: IAPT needs prompts of at least 2 tokens"):
        method.hidden_states(tiny_llama, encode(tiny_llama, "a"))


def outer_parameters(method):
    return [p for group in method.outer_groups() for p in group["params"]]


def test_bilevel_puts_exactly_the_rational_coefficients_in_the_outer_group(tiny_llama):
    method = iapt(tiny_llama, bilevel=True, bilevel_lr=0.05)
    outer = method.outer_groups()
    assert len(outer) == 1 and outer[0]["lr"] == 0.05
    rational = {id(p) for g in method.generators for p in g.act.parameters()}
    assert {id(p) for p in outer[0]["params"]} == rational
    inner = {id(p) for g in method.param_groups(1e-3) for p in g["params"]}
    assert inner.isdisjoint(rational) and inner | rational == {id(p) for p in method.parameters() if p.requires_grad}
    plain = iapt(tiny_llama)  # without bilevel: one group of everything, nothing trained apart
    assert plain.outer_groups() == [] and len(plain.param_groups(1e-3)) == 1


def test_bilevel_trains_the_rational_coefficients_on_outer_batches(tiny_llama, tmp_path):
    task = load_task("sentiment")
    task.splits = {k: v[:16] for k, v in task.splits.items()}
    method = iapt(tiny_llama, bilevel=True, bilevel_lr=0.05)
    before = [p.detach().clone() for p in outer_parameters(method)]
    down = method.generators[0].down.weight.detach().clone()
    config = TrainConfig(steps=3, batch_size=4, eval_every=3, eval_limit=4, progress=False)
    result = Trainer(method, tiny_llama, task, config, run_dir=tmp_path).fit()
    assert "outer_loss" in result.history and result.history["outer_loss"].notna().all()
    assert any(not torch.equal(b, p) for b, p in zip(before, outer_parameters(method), strict=True))
    assert not torch.equal(down, method.generators[0].down.weight)
    again = iapt(tiny_llama, bilevel=True, bilevel_lr=0.05)
    Trainer(again, tiny_llama, task, config).fit()
    for p, q in zip(method.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)  # deterministic, outer batches included


def test_an_outer_step_moves_only_the_rational_coefficients_and_leaves_no_gradient(tiny_llama):
    task = load_task("sentiment")
    task.splits = {k: v[:16] for k, v in task.splits.items()}
    method = iapt(tiny_llama, bilevel=True, bilevel_lr=0.05)
    trainer = Trainer(method, tiny_llama, task, TrainConfig(steps=3, batch_size=4, progress=False))
    outer = {id(p) for p in outer_parameters(method)}
    before = [p.detach().clone() for p in method.parameters()]
    record = trainer.outer.step(trainer.optimiser, trainer.step)
    assert set(record) == {"outer_loss"} and record["outer_loss"] > 0
    moved = {id(p) for b, p in zip(before, method.parameters(), strict=True) if not torch.equal(b, p)}
    assert moved and moved <= outer
    assert all(p.grad is None for p in method.parameters())


def test_iapt_prompts_depend_on_the_instruction(tiny_llama):
    method = iapt(tiny_llama)
    _, a, _ = method.prompts(tiny_llama, method.split(tiny_llama, encode(tiny_llama, "Translate this.\nOut:")))
    _, b, _ = method.prompts(tiny_llama, method.split(tiny_llama, encode(tiny_llama, "Count the words.\nOut:")))
    assert not torch.allclose(a[1], b[1])


