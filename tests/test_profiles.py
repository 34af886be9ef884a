"""Profiles: the offline gpu profile (backbone and data from local places), and frozen weights in bf16."""
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import make, short_task

from lopt_core.cli import main
from lopt_core.lab.profiles import get_profile
from lopt_core.methods import build_method
from lopt_core.model import load_backbone
from lopt_core.training.trainer import TrainConfig, Trainer


def glue_folder(root):
    folder = root / "sst2"
    folder.mkdir(parents=True)
    for split, n in (("train", 40), ("dev", 8), ("test", 8)):
        rows = "".join(f"{'a fine film' if i % 2 else 'a dull film'} {i}\t{i % 2}\n" for i in range(n))
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    return folder


def test_the_gpu_profile_is_offline_local_backbone_and_local_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LOPT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOPT_BACKBONE", raising=False)
    glue_folder(tmp_path)
    P = get_profile("gpu")
    assert (P.backbone, P.task, P.task_source_kind, P.train_limit) == ("embedded", "sst2", "files", None)
    assert (P.steps, P.batch_size) == (2000, 32)
    task = P.load_task()
    assert task.source == str(tmp_path / "sst2") and {k: len(v) for k, v in task.splits.items()} == {
        "train": 40, "validation": 8, "test": 8}  # the whole training set: nothing cut
    monkeypatch.setenv("LOPT_BACKBONE", "tiny-llama")  # a user's local model folder works the same way
    assert get_profile("gpu").load_backbone(device="cpu").name == "tiny-llama"
    assert get_profile("gpu", backbone="tiny-gpt2").backbone == "tiny-gpt2"  # a notebook parameter wins
    assert get_profile("cpu").backbone == "embedded"  # the variable is the gpu profile's only


def test_train_config_comes_from_the_profile_and_overrides_win():
    config = get_profile("ci").train_config(seed=3, lr=0.1)
    assert (config.steps, config.eval_every, config.eval_limit, config.final_eval_limit, config.seed,
            config.lr) == (16, 16, 32, 32, 3, 0.1)
    with pytest.raises(TypeError, match="unknown profile settings: stpes"):
        get_profile("ci", stpes=3)


def test_a_profile_s_tuned_rate_applies_to_its_method_only_and_an_explicit_lr_wins():
    P = get_profile("ci", learning_rates={"lopt1": 0.1})
    assert P.train_config(0, method="lopt1").lr == 0.1
    assert P.train_config(0, method="lopt1", lr=3e-3).lr == 3e-3
    assert P.train_config(0, method="lopt1", lr=None).lr == 0.1  # a notebook's "None: the default" keeps it
    assert P.train_config(0, method="prompt_tuning").lr is None  # the method's recommended_lr then
    assert P.train_config(0).lr is None


def test_a_profile_s_weight_decay_applies_to_its_method_only_and_reaches_the_trainer():
    """A profile's decay for one method (the demo trains LoPT-1 without its default decay) overrides the method's
    recommended one for that method only; an explicit decay wins; none named leaves the method's own."""
    P = get_profile("ci", weight_decays={"lopt1": 0.0})
    assert P.train_config(0, method="lopt1").weight_decay == 0.0
    assert P.train_config(0, method="lopt1", weight_decay=0.5).weight_decay == 0.5
    assert P.train_config(0, method="lopt1", weight_decay=None).weight_decay == 0.0
    assert get_profile("ci").train_config(0, method="lopt1").weight_decay is None
    backbone = load_backbone("tiny-llama")
    task = P.load_task().limit("train", 8)
    for profile, decay in ((P, 0.0), (get_profile("ci"), 1.0)):  # LoPT-1's residual form recommends 1
        method = build_method("lopt1", backbone, prompt_len=4, rank=2, residual=True)
        trainer = Trainer(method, backbone, task, profile.train_config(0, method="lopt1", steps=1, progress=False))
        assert trainer.config.weight_decay == decay


def test_make_demo_runs_the_demo_profile_with_the_rates_validation_chose():
    """`make demo` defaults to the demo profile, whose rates are the ones benchmarks/demo_rates.py chose on
    validation with a stability margin, for the forms and weight decays the profile trains (the measurement is
    committed beside the code that uses it)."""
    root = Path(__file__).resolve().parent.parent
    assert "PROFILE ?= demo" in (root / "Makefile").read_text()
    demo = get_profile("demo")
    assert demo.seeds == (0,) and demo.task == "yesno"
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        from harness.grid import demo_rates_record, profile_settings, stable_choice, trained_decay
    finally:
        sys.path.remove(str(root / "benchmarks"))
    measured = json.loads((root / "benchmarks" / "results" / f"{demo_rates_record(demo.to_dict())}.json").read_text())
    assert profile_settings(measured["config"]["profile"]) == profile_settings(demo.to_dict())  # steps, task, batch…
    chosen = {name: result["best_lr"] for name, result in measured["results"].items()}
    assert demo.learning_rates == chosen
    ranks = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}}
    tiny = load_backbone("tiny-llama")
    for name, result in measured["results"].items():  # tuned with the weight decay the method trains with today
        assert result.get("weight_decay", 0.0) == trained_decay(name, demo, tiny, ranks[name]), name
    for result in measured["results"].values():  # chosen = the best that holds, over at least 2 seeds per rate
        seeds = {float(lr): [v["validation_accuracy"] for v in r["seeds"].values()]
                 for lr, r in result["by_rate"].items()}
        assert stable_choice(seeds)["lr"] == result["best_lr"]


def test_frozen_weights_in_bf16_train_the_method_in_fp32(tmp_path):
    bb = load_backbone("tiny-llama", device="cpu", dtype=torch.bfloat16, precision="bf16")
    assert bb.dtype == torch.bfloat16 and bb.model.get_output_embeddings().weight.dtype == torch.bfloat16
    method = make("prefix_tuning", bb)
    result = Trainer(method, bb, short_task(), TrainConfig(steps=6, batch_size=4, eval_every=3, lr=1e-2,
                                                           progress=False)).fit()
    assert all(p.dtype == torch.float32 for p in method.parameters())  # trained parameters stay fp32
    assert result.history["loss"].notna().all() and result.metrics["test"]["n"] == 4
    out = tmp_path / "run"
    assert main(["train", "--method", "prompt_tuning", "--task", "sentiment", "--backbone", "tiny-llama", "--dtype",
                 "bf16", "--prompt-len", "4", "--steps", "2", "--batch-size", "4", "--eval-every", "2",
                 "--eval-limit", "4", "--final-eval-limit", "4", "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["dtype"], config["precision"]) == ("bfloat16", "fp32")  # auto on CPU: no autocast
    assert main(["evaluate", str(out), "--split", "test", "--limit", "4"]) == 0  # reloads the weights in bf16
    assert json.loads((out / "evaluate-test.json").read_text())["test"] == json.loads(
        (out / "metrics.json").read_text())["test"]
