"""Training dynamics: recorded per step without changing training, equal to a naive reference, summarised and
drawn from a run folder (``lopt-kit dynamics``)."""
import pandas as pd
import pytest
import torch
from conftest import make, short_task

from lopt_core import TrainConfig, Trainer
from lopt_core.cli import main
from lopt_core.training.dynamics import Dynamics, summary

FAST = dict(steps=4, batch_size=4, eval_every=2, lr=3e-2, progress=False)


def test_recording_changes_nothing_but_the_history(tiny_llama):
    runs = {}
    for on in (False, True):
        method = make("lopt2", tiny_llama)
        runs[on] = (Trainer(method, tiny_llama, short_task(), TrainConfig(dynamics=on, **FAST)).fit(), method)
    (off, m_off), (on, m_on) = runs[False], runs[True]
    assert off.history["loss"].tolist() == on.history["loss"].tolist()
    for (name, a), b in zip(m_off.state_dict().items(), m_on.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert set(on.history.columns) - set(off.history.columns) >= {
        "grad_norm.U", "grad_norm.V", "update_ratio.U", "update_ratio.V", "prompt_norm", "prompt_drift",
        "prompt_erank", "prompt_s1", "dead_units", "zero_fraction"}
    h = on.history
    assert (h["prompt_drift"] > 0).all()
    assert ((1 <= h["prompt_erank"]) & (h["prompt_erank"] <= 6)).all()  # n = 6 rows
    assert h["dead_units"].between(0, 1).all()


def test_each_quantity_equals_a_naive_reference(tiny_llama):
    method = make("lopt1", tiny_llama, residual=False)  # both factors away from zero: every ratio defined
    start = method.input_prompt().detach().clone()
    probe = Dynamics(method)
    g = torch.Generator().manual_seed(0)
    for p in method.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    grads = {n: p.grad.norm().item() for n, p in method.named_parameters()}
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    row = probe.before_step()
    torch.optim.SGD(method.parameters(), lr=0.1).step()
    row.update(probe.after_step())
    for name, p in method.named_parameters():
        assert row[f"grad_norm.{name}"] == pytest.approx(grads[name], rel=1e-6)
        expected = ((p.detach() - before[name]).norm() / before[name].norm()).item()
        assert row[f"update_ratio.{name}"] == pytest.approx(expected, rel=1e-5)
    X = method.input_prompt().detach()
    assert row["prompt_drift"] == pytest.approx(((X - start).norm() / start.norm()).item(), rel=1e-5)
    s = torch.linalg.svdvals(X.double())
    p_ = s / s.sum()
    assert row["prompt_erank"] == pytest.approx(torch.exp(-(p_ * p_.log()).sum()).item(), rel=1e-6)
    assert row["prompt_s1"] == pytest.approx(s[0].item(), rel=1e-6)



def test_a_factor_that_starts_at_zero_has_no_update_ratio_until_it_moves(tiny_llama):
    """Residual LoPT-1's U starts at exactly zero: its first ratio ‖ΔU‖ / ‖U‖ is undefined (empty), not 1e9."""
    method = make("lopt1", tiny_llama, residual=True)
    h = Trainer(method, tiny_llama, short_task(), TrainConfig(dynamics=True, **FAST)).fit().history
    assert pd.isna(h["update_ratio.U"].iloc[0]) and h["update_ratio.U"].iloc[1:].between(0, 10).all()
    assert h["update_ratio.V"].notna().all()

def test_lopt2_dead_units_count_columns_of_sigma_that_are_zero_on_every_row(tiny_llama):
    method = make("lopt2", tiny_llama)
    with torch.no_grad():
        method.U[:, 0] = -method.X0.sum(0) * 10  # pre-activations of unit 0: negative on every row (ReLU: dead)
        method.U[:, 1] = method.X0.sum(0)
    d = method.diagnostics()
    H = torch.relu(method.X0 @ method.U)
    assert d["dead_units"] == (H == 0).all(0).float().mean().item()
    assert d["dead_units"] >= 0.5 and d["zero_fraction"] == (H == 0).float().mean().item()


def test_the_cli_summarises_and_draws_a_run(tiny_llama, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(make("prompt_tuning", tiny_llama), tiny_llama, short_task(), TrainConfig(**FAST), run_dir=run).fit()
    table = summary(run)
    assert {"prompt_drift", "grad_norm.prompt"} <= set(table.index)
    assert table.loc["prompt_drift", "first"] == pd.read_csv(run / "history.csv")["prompt_drift"].iloc[0]
    assert main(["dynamics", str(run), "--plot", str(tmp_path / "d.png")]) == 0
    out = capsys.readouterr().out
    assert "prompt_drift" in out and (tmp_path / "d.png").stat().st_size > 10_000


def test_a_run_without_dynamics_says_so(tiny_llama, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(make("prompt_tuning", tiny_llama), tiny_llama, short_task(), TrainConfig(dynamics=False, **FAST),
            run_dir=run).fit()
    assert main(["dynamics", str(run)]) == 2
    assert "recorded no dynamics" in capsys.readouterr().err
