"""On a GPU: every method's scoring, train step, generation and serving in bf16 against CPU fp32 on the same
random weights (``benchmarks/gpu_check.sh`` runs these on a lent GPU machine).

Skipped without CUDA. ``LOPT_ACCEL_DEVICE=cpu`` runs the same checks with the accelerated side on CPU in
bf16 (a dry run of the tests' own logic on a machine without a GPU). ``LOPT_ACCEL_SPECS`` (comma-separated
backbone specs, e.g. a local folder of random weights with SmolLM2-135M's config) replaces the tiny matrix.

Tolerances are relative to the bare backbone's own error on the same batch (the frozen model alone, bf16 on
the device against fp32 on CPU), as in ``test_precision``: a method may at most double it.
"""
import copy
import os

import pytest
import torch
from conftest import CACHEABLE, TRAINABLE, backbone, batch_of, make, short_generation_task, short_task

from lopt_core.data.batching import LengthPolicy, last_positions
from lopt_core.evaluation.decoding import encode_prompts, generate
from lopt_core.evaluation.evaluator import to_device
from lopt_core.evaluation.scoring import class_scores, loss_terms
from lopt_core.model import TINY_SPECS, load_backbone
from lopt_core.serving.server import Server
from lopt_core.training.trainer import TrainConfig, Trainer

ACCEL = os.environ.get("LOPT_ACCEL_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
SPECS = [s for s in os.environ.get("LOPT_ACCEL_SPECS", "").split(",") if s] or list(TINY_SPECS)
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(ACCEL is None, reason="no CUDA device (LOPT_ACCEL_DEVICE=cpu dry-runs these on CPU)")]


@pytest.fixture(scope="module", params=SPECS)
def pair(request):
    """(the backbone on CPU in fp32, the same weights on the accelerated device in bf16)."""
    cpu = backbone(request.param) if request.param in TINY_SPECS else load_backbone(request.param, device="cpu",
                                                                                      precision="fp32")
    accel = load_backbone(request.param, device=ACCEL, precision="bf16")
    assert accel.fingerprint() == pytest.approx(cpu.fingerprint(), rel=1e-6)  # the same weights
    return cpu, accel


def on(method, bb):
    """A copy of ``method`` on ``bb``'s device (built once on CPU: the same parameters on both sides)."""
    return copy.deepcopy(method).to(bb.device)


def log_probs(method, bb, batch, verb):
    with torch.no_grad(), bb.autocast():
        return class_scores(method, bb, to_device(batch, bb.device), verb).float().log_softmax(-1).cpu()


def gap(label, pair, task):
    cpu, accel = pair
    method = make(label, cpu, perturb=0.3)
    batch, verb = batch_of(task, cpu, 8), task.verbalizer(cpu.tokenizer)
    return (log_probs(method, cpu, batch, verb) - log_probs(on(method, accel), accel, batch, verb)).abs().max().item()


@pytest.fixture(scope="module")
def bare(pair):
    return gap("zero_shot", pair, short_task())


@pytest.mark.parametrize("label", TRAINABLE)
def test_scores_on_the_device_in_bf16_stay_within_three_times_the_backbones_own_error(label, pair, bare):
    # A method adds its own bf16 rounding (20 perturbed prompt rows, their products) to the backbone's: on random
    # SmolLM2-135M-shaped weights, CPU bf16, LoPT-1 measured 2.6× the bare backbone's gap (0.0108 vs 0.0042).
    assert gap(label, pair, short_task()) <= 3 * bare + 1e-3, bare


@pytest.mark.parametrize("label", TRAINABLE)
@pytest.mark.parametrize("kind", ["classification", "generation"])
def test_train_step_loss_and_gradient_match_cpu_fp32(label, kind, pair):
    """Loss within 2% and the gradient pointing the same way (cosine ≥ 0.98): what one step needs."""
    cpu, accel = pair
    task = short_task() if kind == "classification" else short_generation_task()
    method = make(label, cpu, perturb=0.1)
    results = []
    for bb, m in ((cpu, method), (accel, on(method, accel))):
        with bb.autocast():
            total, count, _ = loss_terms(m, bb, to_device(batch_of(task, bb, 4), bb.device), task)
        loss = total / count
        grads = torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])
        results.append((loss.item(), torch.cat([g.float().flatten().cpu() for g in grads])))
    (loss_cpu, g_cpu), (loss_acc, g_acc) = results
    assert loss_acc == pytest.approx(loss_cpu, rel=2e-2)
    assert torch.nn.functional.cosine_similarity(g_cpu, g_acc, dim=0) >= 0.98


@pytest.mark.parametrize("label", ["prompt_tuning", "lopt2", "prefix_tuning", "iapt"])
def test_trainer_runs_on_the_device_with_its_mixed_precision(label, pair, tmp_path):
    _, accel = pair
    method = make(label, accel)
    before = [p.detach().clone() for p in method.parameters() if p.requires_grad]
    config = TrainConfig(steps=3, batch_size=4, eval_every=3, eval_limit=4, progress=False)
    result = Trainer(method, accel, short_task(), config, run_dir=tmp_path).fit()
    import json

    assert json.loads((tmp_path / "run_info.json").read_text())["mixed_precision"] == "bf16"
    losses = torch.tensor(result.history["loss"].tolist())
    assert len(losses) == config.steps and torch.isfinite(losses).all()
    after = [p for p in method.parameters() if p.requires_grad]
    assert any(not torch.equal(b, p) for b, p in zip(before, after, strict=True))


@pytest.mark.parametrize("label", TRAINABLE)
def test_next_token_distribution_after_the_prompt_matches_cpu_fp32(label, pair, bare):
    """Full-vocabulary log-probabilities at the end of a generation prompt (what decoding starts from)."""
    cpu, accel = pair
    method = make(label, cpu, perturb=0.3)
    task = short_generation_task()
    out = []
    for bb, m in ((cpu, method), (accel, on(method, accel))):
        rows = task.examples("test", 2)
        batch = to_device(encode_prompts(bb, [task.prompt(r) for r in rows], LengthPolicy(64, "test")), bb.device)
        with torch.no_grad(), bb.autocast():
            h = m.hidden_states(bb, batch)
            h_last = h[torch.arange(h.shape[0], device=h.device), last_positions(batch["attention_mask"])]
            out.append(bb.logits(h_last).float().log_softmax(-1).cpu())
    assert (out[0] - out[1]).abs().max().item() <= 2 * bare + 5e-2


def test_greedy_generation_runs_on_the_device(pair):
    _, accel = pair
    method = make("prefix_tuning", accel)
    task = short_generation_task()
    texts = generate(method, accel, [task.prompt(r) for r in task.examples("test")], max_new_tokens=4)
    assert len(texts) == 1 and isinstance(texts[0], str)


@pytest.mark.parametrize("label", [m for m in CACHEABLE if m != "zero_shot"])
def test_served_classification_matches_cpu_fp32(label, pair, bare):
    cpu, accel = pair
    method = make(label, cpu, perturb=0.3)
    task = short_task()
    requests = [("t", r["text"]) for r in task.examples("validation")]
    answers = []
    for bb in (cpu, accel):
        server = Server(bb)
        server.add("t", on(method, bb), task)
        answers.append(server.classify(requests))
    for a, b in zip(*answers, strict=True):
        for name in a["probabilities"]:
            assert abs(a["probabilities"][name] - b["probabilities"][name]) <= 2 * bare + 1e-2


def test_the_accelerated_side_computes_in_bf16(pair):
    """What every gap above measures: the accelerated side's logits come out of bf16 matmuls, the CPU side's fp32."""
    task = short_task()
    prompts = [task.prompt(r) for r in task.examples("test", 2)]
    dtypes = []
    for bb in pair:
        batch = to_device(encode_prompts(bb, prompts, LengthPolicy(64, "test")), bb.device)
        with torch.no_grad(), bb.autocast():
            h = make("zero_shot", bb).hidden_states(bb, batch)  # (B, T, d)
            dtypes.append(bb.logits(h[:, -1]).dtype)
    assert dtypes == [torch.float32, torch.bfloat16]
