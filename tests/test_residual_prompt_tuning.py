"""Residual prompt tuning: Φ(P) against a naive reference, its start, materialise(), counts and errors. (Batching,
padding, gradients, generation and serving on every backbone are in test_contract.py.)"""
import pytest
import torch
from conftest import batch_of, short_task

from lopt_core.methods import build_method, load_method, save_method
from lopt_core.methods.prompt_tuning import PromptTuning, PromptTuningConfig


def perturbed(method, scale=0.1):
    """As if trained: every parameter moved (a zero LayerNorm gain included)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return method


def naive_phi(P, mlp):
    """Φ(P_i) = P_i + LN(W₂ ReLU(W₁ P_i + b₁) + b₂), one row at a time, from the layers' tensors."""
    lin1, lin2 = mlp[0], mlp[2]
    rows = []
    for p in P:
        z = lin2.weight @ torch.relu(lin1.weight @ p + lin1.bias) + lin2.bias
        if len(mlp) == 4:
            ln = mlp[3]
            z = (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + ln.eps) * ln.weight + ln.bias
        rows.append(p + z)
    return torch.stack(rows)


@pytest.mark.parametrize("options", [{}, {"separate_mlps": True}, {"layer_norm": False}],
                         ids=["shared", "separate", "no-layernorm"])
def test_the_prompt_is_the_residual_mlp_of_each_row(options, tiny_llama):
    method = perturbed(build_method("residual_prompt_tuning", tiny_llama, prompt_len=4, bottleneck=6, **options))
    P = method.prompt.detach()
    mlps = list(method.mlps) if options.get("separate_mlps") else [method.mlps[0]] * 4
    expected = torch.cat([naive_phi(P[i:i + 1], mlp) for i, mlp in enumerate(mlps)])
    torch.testing.assert_close(method.input_prompt().detach(), expected, atol=1e-6, rtol=1e-5)
    assert len(method.mlps) == (4 if options.get("separate_mlps") else 1)
    assert method.trainable_parameters() == method.parameter_formula()


def test_the_zero_start_is_prompt_tunings_start(tiny):
    """mlp_start='zero': Φ(P) = P exactly, so the model sees prompt tuning's start (same init, same seed)."""
    method = build_method("residual_prompt_tuning", tiny, prompt_len=5, bottleneck=8, seed=2)
    reference = PromptTuning(PromptTuningConfig(prompt_len=5, seed=2), tiny)
    assert torch.equal(method.input_prompt(), method.prompt) and torch.equal(method.prompt, reference.prompt)
    batch = batch_of(short_task(), tiny)
    assert torch.equal(method.hidden_states(tiny, batch), reference.hidden_states(tiny, batch))


def test_the_authors_start_moves_every_row_by_a_unit_variance_branch(tiny_llama):
    """PyTorch's default init, as the authors' code: the LayerNorm makes each row's change zero-mean, unit-variance,
    whatever the embeddings' scale (what the zero start avoids)."""
    method = build_method("residual_prompt_tuning", tiny_llama, prompt_len=4, bottleneck=6, mlp_start="authors")
    change = (method.input_prompt() - method.prompt).detach()
    torch.testing.assert_close(change.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(change.var(dim=1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_materialise_keeps_the_prompt_and_drops_the_mlp_exactly(tiny, tmp_path):
    method = perturbed(build_method("residual_prompt_tuning", tiny, prompt_len=5, bottleneck=8, seed=1))
    batch = batch_of(short_task(), tiny)
    prompt, before = method.input_prompt().detach().clone(), method.hidden_states(tiny, batch)
    trained, stored = method.trainable_parameters(), method.stored_parameters()
    assert method.materialise() is method
    assert not hasattr(method, "mlps") and method.config.reparam is False
    assert method.trainable_parameters() == method.parameter_formula() == stored == 5 * tiny.hidden_size < trained
    assert torch.equal(method.input_prompt(), prompt)
    assert torch.equal(method.hidden_states(tiny, batch), before)
    save_method(method, tmp_path, tiny.name)
    again = load_method(tmp_path, tiny)
    assert again.config.reparam is False and torch.equal(again.hidden_states(tiny, batch), before)


@pytest.mark.parametrize(("separate", "k"), [(False, 1), (True, 4)], ids=["shared", "separate"])
def test_counts_are_the_authors(separate, k, tiny_llama):
    """n·d + k(2·d·m + m + 3·d) trained (k = 1 shared MLP, or n), n·d stored."""
    n, m, d = 4, 6, tiny_llama.hidden_size
    method = build_method("residual_prompt_tuning", tiny_llama, prompt_len=n, bottleneck=m, separate_mlps=separate)
    assert method.trainable_parameters() == n * d + k * (2 * d * m + m + 3 * d)
    assert method.stored_parameters() == n * d


@pytest.mark.parametrize(("options", "message"), [({"bottleneck": 0}, "bottleneck must be a positive integer"),
                                                  ({"mlp_start": "ones"}, "mlp_start must be one of")])
def test_bad_options_are_refused_clearly(options, message, tiny_llama):
    with pytest.raises(ValueError, match=message):
        build_method("residual_prompt_tuning", tiny_llama, prompt_len=4, **options)
