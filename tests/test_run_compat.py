"""Run folders written before the layered subpackages (lopt_core 0.1.0, commit ec3ca61) still load, evaluate
and resume: checkpoints hold only tensors and plain data, ``method.json`` a registry name, no module path.
The folder in tests/fixtures/run_v0.1.0 was written by that commit's trainer (LoPT-1 on ``short_task`` on
tiny-llama, 4 steps)."""
import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from conftest import short_task

from lopt_core import TrainConfig, Trainer, build_method, evaluate, load_method, load_run
from lopt_core.methods import saved_config

OLD = Path(__file__).parent / "fixtures" / "run_v0.1.0"


def test_an_old_run_folder_loads_and_scores_what_it_recorded(tiny_llama):
    run = load_run(OLD)
    assert run["config"]["method"] == "lopt1" and run["metrics"]["steps"] == 4
    method = load_method(OLD / "method", tiny_llama)
    assert method.config.residual is False  # the form LoPT-1 had then, not today's default
    test = evaluate(method, tiny_llama, short_task(), "test")
    assert test["accuracy"] == run["metrics"]["test"]["accuracy"]
    assert test["loss"] == pytest.approx(run["metrics"]["test"]["loss"], rel=1e-6)


def test_an_old_checkpoint_resumes(tiny_llama, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(OLD, folder)
    saved = load_run(folder)["config"]["train"]
    config = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    method = build_method("lopt1", tiny_llama, **saved_config("lopt1", load_run(folder)["config"]["method_config"]))
    trainer = Trainer(method, tiny_llama, short_task(), config, run_dir=folder)
    result = trainer.fit(resume=True)  # the checkpoint is at its last step: nothing left to train
    assert trainer.step == 4 and len(result.history) == 4
    assert result.metrics["test"]["accuracy"] == load_run(OLD)["metrics"]["test"]["accuracy"]


def test_an_old_checkpoint_refuses_an_option_added_since_at_another_value(tiny_llama, tmp_path):
    """Options LoPT-1 gained after the old run (lr_ratio, residual, …) match the checkpoint only at their defaults."""
    folder = tmp_path / "run"
    shutil.copytree(OLD, folder)
    saved = load_run(folder)["config"]["train"]
    config = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    saved_options = saved_config("lopt1", load_run(folder)["config"]["method_config"])
    method = build_method("lopt1", tiny_llama, **{**saved_options, "lr_ratio": 4.0})
    with pytest.raises(ValueError, match="cannot resume.*lr_ratio"):
        Trainer(method, tiny_llama, short_task(), config, run_dir=folder).fit(resume=True)


def test_an_old_checkpoint_refuses_todays_default_where_the_default_changed(tiny_llama, tmp_path):
    """LoPT-1 became residual by default after the old run: rebuilt with today's defaults, it is another method (X0 +
    U V, not U V) and resuming is refused, naming the option; the saved config completed by saved_config resumes."""
    folder = tmp_path / "run"
    shutil.copytree(OLD, folder)
    saved = load_run(folder)["config"]
    config = TrainConfig(**{k: v for k, v in saved["train"].items() if k in TrainConfig.__dataclass_fields__})
    method = build_method("lopt1", tiny_llama, **saved["method_config"])
    assert method.config.residual is True
    with pytest.raises(ValueError, match=r"cannot resume.*'residual': \(False, True\)"):
        Trainer(method, tiny_llama, short_task(), config, run_dir=folder).fit(resume=True)


def test_a_checkpoint_that_left_the_rate_to_the_method_resumes_at_the_rate_its_run_used(tiny_llama, tmp_path):
    """Until 2026-12-05 a config that named no rate was saved with lr None; the trainer now writes the method's rate
    into its config. Such a checkpoint resumes at the rate its config.json says the run used, and only at that one."""
    folder = tmp_path / "run"
    shutil.copytree(OLD, folder)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    state["config"]["lr"] = None  # as the trainer saved it before
    torch.save(state, folder / "checkpoint.pt")
    saved = load_run(folder)["config"]["train"]
    options = saved_config("lopt1", load_run(folder)["config"]["method_config"])
    config = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    trainer = Trainer(build_method("lopt1", tiny_llama, **options), tiny_llama, short_task(), config, run_dir=folder)
    assert trainer.fit(resume=True).metrics["test"]["accuracy"] == load_run(OLD)["metrics"]["test"]["accuracy"]
    other = dataclasses.replace(config, lr=2 * saved["lr"])
    with pytest.raises(ValueError, match="cannot resume.*lr"):
        Trainer(build_method("lopt1", tiny_llama, **options), tiny_llama, short_task(), other, run_dir=folder).fit(
            resume=True)


def test_the_trainer_writes_the_method_s_rate_and_decay_into_its_config(tiny_llama):
    method = build_method("lopt1", tiny_llama, prompt_len=4, rank=2)
    trainer = Trainer(method, tiny_llama, short_task(), TrainConfig(steps=1))
    assert (trainer.config.lr, trainer.config.weight_decay) == (method.recommended_lr, method.recommended_weight_decay)
    named = Trainer(method, tiny_llama, short_task(), TrainConfig(steps=1, lr=1e-3, weight_decay=0.0)).config
    assert (named.lr, named.weight_decay) == (1e-3, 0.0)
