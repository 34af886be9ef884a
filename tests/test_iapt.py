"""IAPT: generators, rational activation, exact insertion, the bi-level option. (Batching, generation
and resume for IAPT on every backbone are in test_contract.py.)"""
import pytest
import torch
import torch.nn.functional as F
from conftest import ATOL, RTOL, short_generation_task, short_task

from lopt_core.data import load_task
from lopt_core.evaluation.decoding import generate_ids
from lopt_core.evaluation.scoring import loss_and_scores
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
    layers = backbone.decoder_layers
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




# ----------------------------------------------------------------------------- gate=True: start at the frozen model
def frozen_window(backbone, monkeypatch):
    """Sliding-window layers count the n gated cache columns against their window (the module's docstring):
    widen the window so that the tiny Gemma 3's rows, which cross its 8 columns, compare with the frozen model."""
    if getattr(backbone.config, "sliding_window", None):
        monkeypatch.setattr(backbone.config, "sliding_window", 512)


@pytest.mark.parametrize("make_task", [short_task, short_generation_task], ids=["classification", "generation"])
def test_a_gated_iapt_starts_at_the_frozen_model(tiny, make_task, monkeypatch):
    frozen_window(tiny, monkeypatch)
    task = make_task()
    batch = task.collate(task.examples("train", 3, expand_references=True)[:3], tiny.tokenizer)
    method = iapt(tiny, gate=True)
    ours = method.hidden_states(tiny, batch)
    frozen = tiny.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[real], frozen[real], atol=ATOL, rtol=RTOL)
    with torch.no_grad():  # open the gates: the generated tokens now change the response (the cue and after)
        method.gates.fill_(1.0)
    changed = method.hidden_states(tiny, batch)
    rows, last = torch.arange(len(real)), real.sum(1) - 1  # each row's last token: in the response
    assert (changed[rows, last] - frozen[rows, last]).abs().amax(-1).min() > 1e-3


def test_a_gate_of_two_counts_the_generated_tokens_twice(tiny_llama):
    """The gate's naive reference: w = 2 on the virtual columns is the same attention as an ungated cache that
    holds each virtual column twice (and w = 0 as one that holds none)."""
    from lopt_core.model.kv import cache_layers, rebuild

    method = iapt(tiny_llama, gate=True)
    batch = encode(tiny_llama, "Is this positive? I loved it.\nAnswer:", " yes")
    parts = method.split(tiny_llama, batch)
    n, Ti = method.config.num_virtual, parts["instr_ids"].shape[1]
    for w, copies in ((2.0, 2), (0.0, 0)):
        with torch.no_grad():
            method.gates.fill_(w)
            cache, _, _ = method.prompts(tiny_llama, parts)
            ours = tiny_llama.transformer(**method._response_inputs(parts, cache)).last_hidden_state
            cache, _, _ = method.prompts(tiny_llama, parts)
            layers = [(torch.cat([k[:, :, :Ti]] + [k[:, :, Ti:]] * copies, 2),
                       torch.cat([v[:, :, :Ti]] + [v[:, :, Ti:]] * copies, 2)) for k, v in cache_layers(cache)]
            inputs = method._response_inputs(parts, rebuild(layers))
            inputs["attention_mask"] = torch.cat([parts["instr_mask"], parts["instr_mask"].new_ones(1, n * copies),
                                                  parts["resp_mask"]], dim=1)
            naive = tiny_llama.transformer(**inputs).last_hidden_state
        torch.testing.assert_close(ours, naive, atol=ATOL, rtol=RTOL)


def test_the_gates_train_from_zero_at_their_own_rate(tiny_llama):
    task = short_task()
    method = iapt(tiny_llama, gate=True, gate_lr=0.05)
    groups = method.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 0.05] and groups[1]["params"] == [method.gates]
    loss, _ = loss_and_scores(method, tiny_llama, task.collate(task.examples("train", 4)[:4], tiny_llama.tokenizer),
                              task)
    loss.backward()
    assert torch.equal(method.gates, torch.zeros(2)) and (method.gates.grad.abs() > 1e-6).all()
    assert method.diagnostics() == {"gate_mean": 0.0, "gate_min": 0.0, "gate_max": 0.0}
    with pytest.raises(ValueError, match="gate_lr must be positive"):
        iapt(tiny_llama, gate=True, gate_lr=0.0)


def test_a_gated_iapt_generates_what_the_frozen_model_does(tiny, monkeypatch):
    """Through the decoder's left-aligned copy of the cache and beam search's reordering."""
    frozen_window(tiny, monkeypatch)
    prompts = ["Hi there\nText:", "A longer prompt, about food\nText:"]  # two lengths: the cache gets padded
    zero, method = build_method("zero_shot", tiny), iapt(tiny, gate=True)
    assert (generate_ids(method, tiny, prompts, max_new_tokens=4, num_beams=2, banned=())
            == generate_ids(zero, tiny, prompts, max_new_tokens=4, num_beams=2, banned=()))


def test_other_caches_pass_the_gated_attention_unchanged(tiny_llama):
    """Once a gated IAPT is built, the shared backbone runs ``lopt_gated_sdpa``: every other method is untouched."""
    from lopt_core.model import gate

    method = build_method("prompt_tuning", tiny_llama, prompt_len=3, seed=0)
    batch = encode(tiny_llama, "Is this positive? I loved it.\nAnswer:", " yes")
    base = tiny_llama.config._attn_implementation.removeprefix(gate.PREFIX)
    tiny_llama.model.set_attn_implementation(base)
    before = method.hidden_states(tiny_llama, batch)
    iapt(tiny_llama, gate=True)
    assert gate.installed(tiny_llama)
    torch.testing.assert_close(method.hidden_states(tiny_llama, batch), before, atol=0, rtol=0)


def test_a_gated_iapt_saves_and_loads_exactly(tmp_path):
    """On a backbone of its own, loaded fresh: loading a gated IAPT installs the gated attention again."""
    from conftest import backbone as load_tiny

    from lopt_core.methods import load_method, save_method
    from lopt_core.model import gate, load_backbone

    method = iapt(load_tiny("tiny-gpt2"), gate=True)
    with torch.no_grad():
        method.gates.copy_(torch.tensor([0.3, 1.7]))
    save_method(method, tmp_path, "tiny-gpt2")
    fresh = load_backbone("tiny-gpt2", device="cpu", precision="fp32")
    assert not gate.installed(fresh)
    again = load_method(tmp_path, fresh)
    assert gate.installed(fresh) and again.config == method.config and torch.equal(again.gates, method.gates)
    batch = encode(fresh, "Is this positive? I loved it.\nAnswer:", " yes")
    torch.testing.assert_close(again.hidden_states(fresh, batch), method.hidden_states(load_tiny("tiny-gpt2"), batch),
                               atol=ATOL, rtol=RTOL)


def test_a_narrow_bottleneck_recommends_its_own_rate(tiny_llama):
    """m = 1 trains at its own grid's rate, not m = 32's (a hundred times smaller: 0% exact match at m = 1); a width
    takes the rate of the nearer tuned width on a log scale."""
    rates = {m: build_method("iapt", tiny_llama, bottleneck=m).recommended_lr for m in (1, 5, 6, 32)}
    wide, narrow = build_method("iapt", tiny_llama).recommended_lr, build_method("iapt", tiny_llama).narrow_lr
    assert rates == {1: narrow, 5: narrow, 6: wide, 32: wide} and narrow == pytest.approx(100 * wide)
