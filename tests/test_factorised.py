"""How a factorised prompt X = U V starts and steps: the options of the low-rank diagnosis (per-factor rates as in
LoRA+, the Riemannian-preconditioned step, a start at embedding scale, a start from a trained prompt), each checked
against a naive reference."""

import pytest
import torch
from conftest import short_task

from lopt_core.methods import build_method, load_method, save_method, saved_config
from lopt_core.methods.lopt import svd_factors
from lopt_core.training.accelerate import LossModule
from lopt_core.training.optimiser import precondition
from lopt_core.training.trainer import TrainConfig, Trainer

FAST = dict(batch_size=4, eval_every=3, eval_limit=4, eval_batch_size=8, progress=False, dynamics=False, warmup=0,
            test_split=None, final_eval_limit=4)


def test_preconditioned_gradients_equal_the_naive_inverses():
    g = torch.Generator().manual_seed(0)
    A, B = torch.nn.Parameter(torch.randn(7, 3, generator=g)), torch.nn.Parameter(torch.randn(3, 11, generator=g))
    A.grad, B.grad = torch.randn(7, 3, generator=g), torch.randn(3, 11, generator=g)
    expected_a = A.grad @ torch.inverse(B.detach() @ B.detach().T + 0.1 * torch.eye(3))
    expected_b = torch.inverse(A.detach().T @ A.detach() + 0.1 * torch.eye(3)) @ B.grad
    precondition(A, B, 0.1)
    torch.testing.assert_close(A.grad, expected_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(B.grad, expected_b, rtol=1e-5, atol=1e-6)


def test_a_preconditioned_step_on_x_ignores_how_the_factors_are_scaled():
    """With small δ the first-order move of X = A B under a gradient step, −(g_A B + A g_B) = −(G P_B + P_A G), is the
    same for (A, B) and (A M, M⁻¹ B); without preconditioning it is not (the point of the method)."""
    g = torch.Generator().manual_seed(1)
    A, B, G = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in [(6, 2), (2, 9), (6, 9)])
    M = torch.tensor([[5.0, 1.0], [0.0, 0.2]], dtype=torch.float64)

    def step_on_x(A, B, delta):
        a, b = torch.nn.Parameter(A.clone()), torch.nn.Parameter(B.clone())
        a.grad, b.grad = G @ b.detach().T, a.detach().T @ G  # ∂ℓ/∂A, ∂ℓ/∂B of ℓ = ⟨G, A B⟩
        if delta is not None:
            precondition(a, b, delta)
        return -(a.grad @ b.detach() + a.detach() @ b.grad)

    plain, scaled = step_on_x(A, B, 1e-12), step_on_x(A @ M, torch.inverse(M) @ B, 1e-12)
    torch.testing.assert_close(plain, scaled, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(step_on_x(A, B, None), step_on_x(A @ M, torch.inverse(M) @ B, None), rtol=1e-2)


def test_the_trainer_steps_adamw_on_the_preconditioned_gradients(tiny_llama):
    """One training step with precondition=δ equals a naive one: autograd's gradients, preconditioned by explicit
    inverses, clipped, then torch's AdamW with the method's weight decay."""
    task = short_task()
    config = TrainConfig(steps=1, lr=1e-2, precondition=0.05, **FAST)
    method = build_method("lopt1", tiny_llama, prompt_len=4, rank=2)
    reference = build_method("lopt1", tiny_llama, prompt_len=4, rank=2)
    trainer = Trainer(method, tiny_llama, task, config)
    batch = trainer.batches(0)
    trainer.train_step()

    loss, _ = LossModule(reference, tiny_llama, task)(batch[0])
    U, V = reference.U, reference.V
    gU, gV = torch.autograd.grad(loss / len(batch[0]["labels"]), [U, V])
    with torch.no_grad():
        gU = gU @ torch.inverse(V @ V.T + 0.05 * torch.eye(2))
        gV = torch.inverse(U.T @ U + 0.05 * torch.eye(2)) @ gV
    U.grad, V.grad = gU, gV
    torch.nn.utils.clip_grad_norm_([U, V], config.max_grad_norm)
    torch.optim.AdamW([U, V], lr=1e-2, weight_decay=1.0).step()  # the default residual LoPT-1's decay
    torch.testing.assert_close(method.U, U, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.V, V, rtol=1e-4, atol=1e-6)


def test_precondition_refuses_a_method_without_factor_pairs(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    with pytest.raises(ValueError, match="factor pairs"):
        Trainer(method, tiny_llama, short_task(), TrainConfig(steps=1, precondition=1e-2, **FAST))
    with pytest.raises(ValueError, match="precondition"):
        TrainConfig(precondition=0.0)


@pytest.mark.parametrize("name", ["lopt1", "lopt2"])
def test_lr_ratio_steps_v_lambda_times_further(name, tiny_llama):
    """LoRA+: V's rate is λ × U's. Adam's first step moves every coordinate by its group's rate (|m/√v| = 1)."""
    method = build_method(name, tiny_llama, prompt_len=4, rank=2, lr_ratio=8.0, residual=False)  # U, V both move
    groups = method.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 8e-3]
    assert groups[0]["params"][0] is method.U and groups[1]["params"][0] is method.V
    U0, V0 = method.U.detach().clone(), method.V.detach().clone()
    Trainer(method, tiny_llama, short_task(), TrainConfig(steps=1, lr=1e-3, max_grad_norm=1e9, **FAST)).train_step()
    moved_u, moved_v = (method.U - U0).abs(), (method.V - V0).abs()
    torch.testing.assert_close(moved_u.max().item(), 1e-3, rtol=1e-3, atol=0)
    torch.testing.assert_close(moved_v.max().item(), 8e-3, rtol=1e-3, atol=0)
    assert len(build_method(name, tiny_llama, prompt_len=4, rank=2).param_groups(1e-3)) == 1  # λ = 1: as before
    with pytest.raises(ValueError, match="lr_ratio"):
        build_method(name, tiny_llama, prompt_len=4, rank=2, lr_ratio=0.0)


def test_embedding_scale_start_is_balanced_and_has_the_starts_norm(tiny_llama):
    svd = build_method("lopt1", tiny_llama, prompt_len=6, rank=2, residual=False)
    scaled = build_method("lopt1", tiny_llama, prompt_len=6, rank=2, start_scale="embedding", residual=False)
    start = build_method("prompt_tuning", tiny_llama, prompt_len=6).input_prompt().detach()
    with torch.no_grad():
        X, X_svd = scaled.input_prompt(), svd.input_prompt()
        torch.testing.assert_close(X.norm(), start.norm(), rtol=1e-4, atol=0)
        assert X_svd.norm() < 0.99 * start.norm()  # the rank-2 truncation alone is smaller
        torch.testing.assert_close(X / X.norm(), X_svd / X_svd.norm(), rtol=1e-4, atol=1e-6)  # same direction
        torch.testing.assert_close(scaled.U.T @ scaled.U, scaled.V @ scaled.V.T, rtol=1e-4, atol=1e-5)  # balanced
    with pytest.raises(ValueError, match="start_scale"):
        build_method("lopt1", tiny_llama, prompt_len=6, rank=2, start_scale="big", residual=False)
    with pytest.raises(ValueError, match="residual=False"):  # the default residual form starts at X0 itself
        build_method("lopt1", tiny_llama, prompt_len=6, rank=2, start_scale="embedding")


def test_a_saved_prompt_is_a_start(tiny_llama, tmp_path):
    """init='saved': the trained prompt itself at r = n, its best rank-r approximation (the SVD warm start) below."""
    trained = build_method("prompt_tuning", tiny_llama, prompt_len=5, seed=3)
    with torch.no_grad():
        trained.prompt.add_(torch.randn(trained.prompt.shape, generator=torch.Generator().manual_seed(0)))
    save_method(trained, tmp_path / "run" / "method", tiny_llama.name)
    X = trained.input_prompt().detach()
    with pytest.warns(UserWarning, match="more than the full"):
        full = build_method("lopt1", tiny_llama, prompt_len=5, rank=5, init="saved", init_path=str(tmp_path / "run"),
                            residual=False)
    torch.testing.assert_close(full.input_prompt().detach(), X, rtol=1e-4, atol=1e-5)
    saved = str(tmp_path / "run" / "method")
    low = build_method("lopt1", tiny_llama, prompt_len=5, rank=2, init="saved", init_path=saved, residual=False)
    with pytest.raises(ValueError, match="pass residual=False"):  # the default form keeps X0 as token ids
        build_method("lopt1", tiny_llama, prompt_len=5, rank=2, init="saved", init_path=saved)
    U, V = svd_factors(X, 2)
    torch.testing.assert_close(low.input_prompt().detach(), U @ V, rtol=1e-4, atol=1e-5)
    copy = build_method("prompt_tuning", tiny_llama, prompt_len=5, init="saved", init_path=str(tmp_path / "run"))
    torch.testing.assert_close(copy.input_prompt().detach(), X)
    with pytest.raises(ValueError, match="prompt_len=4"):
        build_method("prompt_tuning", tiny_llama, prompt_len=4, init="saved", init_path=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="init_path"):
        build_method("prompt_tuning", tiny_llama, prompt_len=5, init="saved")
    with pytest.raises(FileNotFoundError, match="no saved method"):
        build_method("prompt_tuning", tiny_llama, prompt_len=5, init="saved", init_path=str(tmp_path))


def test_a_residual_lopt1_starts_at_prompt_tunings_start_and_trains_a_rank_r_change(tiny_llama, tmp_path):
    """residual=True: X = X0 + U V with X0 the start's embeddings (frozen, kept as ids), U = 0 at the start, so the
    first prompt is prompt tuning's own; only U and V train, r(n + d) of them; a saved one loads to the same X."""
    start = build_method("prompt_tuning", tiny_llama, prompt_len=6, seed=2).input_prompt().detach()
    method = build_method("lopt1", tiny_llama, prompt_len=6, rank=2, seed=2, residual=True)
    torch.testing.assert_close(method.input_prompt().detach(), start)
    assert [name for name, p in method.named_parameters() if p.requires_grad] == ["U", "V"]
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 2 * (6 + tiny_llama.hidden_size)
    Trainer(method, tiny_llama, short_task(), TrainConfig(steps=3, lr=1e-1, **FAST)).fit()
    change = method.input_prompt().detach() - start
    assert change.norm() > 0.01  # it moved, by U V alone: X0 stayed where it was
    torch.testing.assert_close(change, (method.U @ method.V).detach(), rtol=0, atol=1e-5)
    save_method(method, tmp_path / "m", tiny_llama.name)
    torch.testing.assert_close(load_method(tmp_path / "m", tiny_llama).input_prompt().detach(),
                               method.input_prompt().detach())
    text = build_method("lopt1", tiny_llama, prompt_len=6, rank=2, residual=True, init="text", init_text="Answer")
    torch.testing.assert_close(text.input_prompt().detach(),
                               build_method("prompt_tuning", tiny_llama, prompt_len=6, init="text",
                                            init_text="Answer").input_prompt().detach())
    with pytest.raises(ValueError, match="init='vocab', 'sample_vocab' or 'text'"):
        build_method("lopt1", tiny_llama, prompt_len=6, rank=2, residual=True, init="random")
    with pytest.raises(ValueError, match="starts at X0"):
        build_method("lopt1", tiny_llama, prompt_len=6, rank=2, residual=True, start_scale="embedding")


def test_a_residual_lopt2_starts_at_prompt_tunings_start_and_trains_a_rank_r_change(tiny_llama, tmp_path):
    """LoPT-2's default, residual=True: X = X0 + σ(X0 U) V, V = 0 at the start, so the first prompt is prompt tuning's
    (X0 is the same common words, drawn with the same seed); U and V train (2·r·d), V first (U's gradient is zero
    while V is); the change stays σ(X0 U) V, and a saved one loads to the same X. A config saved before the default
    changed (no ``residual``) is the paper's form, at the paper's form's own rate."""
    start = build_method("prompt_tuning", tiny_llama, prompt_len=6, seed=3).input_prompt().detach()
    method = build_method("lopt2", tiny_llama, prompt_len=6, rank=2, seed=3)
    assert method.config.residual and method.recommended_lr == type(method).recommended_lr
    old = build_method("lopt2", tiny_llama, **saved_config("lopt2", {"prompt_len": 6, "rank": 2, "seed": 3}))
    assert old.config.residual is False and old.recommended_lr == type(method).plain_lr != method.recommended_lr
    torch.testing.assert_close(method.input_prompt().detach(), start, rtol=0, atol=0)
    assert [name for name, p in method.named_parameters() if p.requires_grad] == ["U", "V"]
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 2 * 2 * tiny_llama.hidden_size
    U0 = method.U.detach().clone()
    Trainer(method, tiny_llama, short_task(), TrainConfig(steps=3, lr=1e-1, **FAST)).fit()
    change = method.input_prompt().detach() - start
    assert change.norm() > 0.01 and method.V.detach().norm() > 0 and not torch.equal(method.U.detach(), U0)
    torch.testing.assert_close(change, (torch.relu(method.X0 @ method.U) @ method.V).detach(), rtol=0, atol=1e-5)
    save_method(method, tmp_path / "m", tiny_llama.name)
    torch.testing.assert_close(load_method(tmp_path / "m", tiny_llama).input_prompt().detach(),
                               method.input_prompt().detach())
