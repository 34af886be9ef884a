"""Scale: the trainer on Accelerate (two gloo processes on CPU), gradient accumulation and the kit's own
gradient checkpointing, on the tiny matrix."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TRAINABLE, batch_of, make, short_generation_task, short_task
from safetensors.torch import load_file

from lopt_core.evaluation.scoring import loss_and_scores
from lopt_core.training.trainer import TrainConfig, Trainer


def gradients(method, backbone, task, checkpointing: bool) -> dict:
    method.zero_grad(set_to_none=True)
    with backbone.gradient_checkpointing(checkpointing):
        loss, _ = loss_and_scores(method, backbone, batch_of(task, backbone), task)
        loss.backward()
    return {name: p.grad.clone() for name, p in method.named_parameters()}


@pytest.mark.parametrize("label", TRAINABLE)
@pytest.mark.parametrize("make_task", [short_task, short_generation_task], ids=["classification", "generation"])
def test_gradient_checkpointing_gives_the_same_gradients(label, make_task, tiny):
    """Every decoder layer recomputed in backward, the prefix's and IAPT's caches kept: the same gradients."""
    method, task = make(label, tiny, perturb=0.3), make_task()
    plain, checkpointed = gradients(method, tiny, task, False), gradients(method, tiny, task, True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("label", ["prompt_tuning", "prefix_tuning", "iapt"])
def test_gradient_checkpointing_saves_activation_memory(label, tiny_llama):
    """Bytes autograd keeps for backward during the forward pass, counted by saved-tensor hooks."""
    method, task = make(label, tiny_llama), short_generation_task()
    batch = batch_of(task, tiny_llama)

    def saved_bytes(checkpointing):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with hooks, tiny_llama.gradient_checkpointing(checkpointing):
            loss, _ = loss_and_scores(method, tiny_llama, batch, task)
        loss.backward()
        return total[0]
    plain, checkpointed = saved_bytes(False), saved_bytes(True)
    assert checkpointed < 0.7 * plain, (checkpointed, plain)


def test_checkpointing_is_off_outside_its_block(tiny_llama):
    layer = tiny_llama.decoder_layers[0]
    with tiny_llama.gradient_checkpointing():
        assert "forward" in vars(layer)
    assert "forward" not in vars(layer)


def test_gradient_accumulation_of_two_half_batches_equals_one_batch_when_they_hold_its_rows(tiny_llama):
    """K micro-batches of B rows are one optimiser step over K·B rows: the loss is averaged over all of them."""
    task = short_task()
    one = make("prompt_tuning", tiny_llama)
    Trainer(one, tiny_llama, task, TrainConfig(steps=1, batch_size=8, lr=0.1, eval_every=1, group_by_length=False,
                                               progress=False)).fit()
    two = make("prompt_tuning", tiny_llama)
    trainer = Trainer(two, tiny_llama, task, TrainConfig(steps=1, batch_size=4, gradient_accumulation=2, lr=0.1,
                                                          eval_every=1, group_by_length=False, progress=False))
    assert trainer.batches.indices(0) + trainer.batches.indices(1) == batch_of_rows(8)
    trainer.fit()
    torch.testing.assert_close(two.prompt, one.prompt, atol=1e-5, rtol=1e-5)


def batch_of_rows(n):
    from lopt_core.data.sampler import batch_indices

    return batch_indices(8, n, 0, 0)  # short_task() has 8 training rows: step 0 of batch n


ACCELERATE = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))


def train(out: Path, *extra: str, processes: int = 1, batch: int = 8, task="sentiment",
          stop_at: int | None = None) -> subprocess.CompletedProcess:
    """``lopt-kit train`` in one process or under ``accelerate launch``; ``stop_at``: interrupted after that step."""
    entry = ["-m", "lopt_core.cli"] if stop_at is None else [str(Path(__file__).with_name("interrupted_train.py"))]
    args = [*entry, "train", "--method", "lopt1", "--task", task, "--backbone", "tiny-llama",
            "--device", "cpu", "--prompt-len", "6", "--rank", "2", "--steps", "5", "--batch-size", str(batch),
            "--eval-every", "5", "--eval-limit", "8", "--final-eval-limit", "8", "--train-limit", "64",
            "--lr", "0.05", "--no-progress", "--out", str(out), *extra]
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "STOP_AT": str(stop_at)}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sentiment", "restaurant"])
def test_two_gloo_processes_train_as_one_with_the_same_global_batch(tmp_path, task):
    """accelerate launch, two CPU processes of 4 rows each = one process of 8 rows, to 1e-5 after 5 steps;
    only the main process writes the run folder, which records the world size; resume works."""
    if not Path(ACCELERATE).exists():
        pytest.skip("the accelerate launcher is not installed")
    single = train(tmp_path / "one", batch=8, task=task)
    assert single.returncode == 0, single.stderr[-3000:]
    double = train(tmp_path / "two", batch=4, processes=2, task=task)
    assert double.returncode == 0, double.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["global_batch_size"] == 8
    assert json.loads((tmp_path / "one" / "run_info.json").read_text())["world_size"] == 1
    a = load_file(tmp_path / "one" / "method" / "method.safetensors")
    b = load_file(tmp_path / "two" / "method" / "method.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-5, msg=key)
    h1 = (tmp_path / "one" / "history.csv").read_text().splitlines()
    h2 = (tmp_path / "two" / "history.csv").read_text().splitlines()
    assert len(h1) == len(h2) == 6  # header + 5 steps, written once
    assert not list((tmp_path / "two").glob(".*tmp"))
    if task != "sentiment":
        return
    # interrupted after step 3 (both ranks stop; the main process writes the checkpoint), then resumed by
    # both ranks: the same parameters and metrics as the uninterrupted two-process run
    stopped = train(tmp_path / "resumed", batch=4, processes=2, task=task, stop_at=3)
    assert stopped.returncode != 0 and (tmp_path / "resumed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    again = train(tmp_path / "resumed", "--resume", batch=4, processes=2, task=task)
    assert again.returncode == 0, again.stderr[-3000:]
    c = load_file(tmp_path / "resumed" / "method" / "method.safetensors")
    for key in b:
        torch.testing.assert_close(c[key], b[key], atol=0, rtol=0, msg=key)
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["test"] == json.loads((tmp_path / "two" / "metrics.json").read_text())["test"]
