import json

import pytest
import torch
from conftest import short_generation_task

from lopt_core.data import load_task
from lopt_core.evaluation.evaluator import evaluate
from lopt_core.methods import build_method, load_method
from lopt_core.training.trainer import TrainConfig, Trainer, TrainingDiverged

FAST = dict(batch_size=4, eval_every=3, eval_limit=8, eval_batch_size=8, progress=False)


def small_task(name="sentiment", train=32, validation=8, test=8):
    task = load_task(name)
    task.splits = {"train": task.splits["train"][:train], "validation": task.splits["validation"][:validation],
                   "test": task.splits["test"][:test]}
    return task


def test_run_folder_holds_config_info_metrics_history_and_method(tiny_llama, tmp_path):
    method = build_method("lopt2", tiny_llama, prompt_len=4, rank=2)
    task = small_task()
    result = Trainer(method, tiny_llama, task, TrainConfig(steps=6, **FAST), run_dir=tmp_path).fit()
    names = {p.name for p in tmp_path.iterdir()}
    expected = {"config.json", "run_info.json", "metrics.json", "history.csv", "method", "checkpoint.pt", "loss.png"}
    assert expected <= names
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["method"] == "lopt2" and config["method_config"]["rank"] == 2 and config["train"]["steps"] == 6
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["seed"] == 0 and "torch" in info["versions"] and info["device"] == "cpu"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == 2 * 2 * 64
    assert metrics["test"] == pytest.approx(evaluate(method, tiny_llama, task, "test"))  # the restored best state
    assert len(result.history) == 6 and {"loss", "lr", "grad_norm", "seconds"} <= set(result.history.columns)
    assert result.history["eval_accuracy"].notna().sum() == 2  # steps 3 and 6
    loaded = load_method(tmp_path / "method", tiny_llama)
    assert torch.equal(loaded.U, method.U)


def test_best_checkpoint_is_restored(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    trainer = Trainer(method, tiny_llama, small_task(), TrainConfig(steps=9, lr=0.5, **FAST))
    trainer.fit()
    best = trainer.selection.best
    assert best["step"] in (3, 6, 9)
    for key, value in trainer.selection.best_state.items():
        assert torch.equal(method.state_dict()[key], value)
    again = evaluate(method, tiny_llama, trainer.task, "validation", limit=8)
    assert again["accuracy"] == best["metrics"]["accuracy"]


def test_validation_selects_and_test_is_scored_once_after_training(tiny_llama):
    method = build_method("lopt1", tiny_llama, prompt_len=4, rank=2)
    seen = []

    class Watch:  # the test split must not be touched while training
        def __call__(self, trainer, record):
            seen.append(dict(trainer.selection.evaluations))

    trainer = Trainer(method, tiny_llama, small_task(), TrainConfig(steps=6, lr=0.3, final_eval_limit=8, **FAST),
                      callbacks=(Watch(),))
    result = trainer.fit()
    assert seen and all("test" not in counts for counts in seen)
    # validation at steps 3 and 6; the final validation is the best's, test is scored once
    assert trainer.selection.evaluations == {"validation": 2, "test": 1}
    assert result.metrics["validation"] == evaluate(method, tiny_llama, trainer.task, "validation", limit=8)
    assert result.metrics["test"] == evaluate(method, tiny_llama, trainer.task, "test", limit=8)
    selection = {"split": "validation", "metric": "accuracy", "best_step": trainer.selection.best["step"]}
    assert result.metrics["selection"] == selection
    other = Trainer(build_method("lopt1", tiny_llama, prompt_len=4, rank=2), tiny_llama, small_task(),
                    TrainConfig(steps=3, final_eval_limit=4, test_split=None, **FAST))
    metrics = other.fit().metrics
    assert metrics["validation"]["n"] == 4 and "test" not in metrics and other.selection.evaluations["validation"] == 2
    with pytest.raises(ValueError, match="cannot also be the one reported"):
        TrainConfig(eval_split="test")


def test_bilevel_training_steps_on_an_outer_split_carved_from_train(tiny_llama):
    from conftest import make

    task = small_task(train=40)
    trainer = Trainer(make("iapt_bilevel", tiny_llama), tiny_llama, task, TrainConfig(steps=2, **FAST))
    outer, rows = trainer.task.splits["outer"], trainer.batches.rows
    assert len(outer) == 4 and len(rows) == 36 and "outer" not in task.splits  # the caller's task stays
    assert trainer.outer.batches.rows == outer
    prompts = {trainer.task.prompt(r) for r in outer}
    assert not prompts & {trainer.task.prompt(r) for r in rows}
    assert not prompts & {trainer.task.prompt(r) for r in task.splits["validation"]}
    assert "carved from train" in trainer.fit().metrics["split_notes"]["outer"]


def test_resume_refuses_a_changed_config(tiny_llama, tmp_path):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    Trainer(method, tiny_llama, small_task(), TrainConfig(steps=3, **FAST), run_dir=tmp_path).fit()
    other = TrainConfig(steps=3, **{**FAST, "batch_size": 2})
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(method, tiny_llama, small_task(), other, run_dir=tmp_path).fit(resume=True)


def test_resume_refuses_an_option_the_checkpoint_predates_unless_at_its_default(tiny_llama, tmp_path):
    """A checkpoint written before a training option existed trained at that option's default."""
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit()
    checkpoint = tmp_path / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["max_grad_norm"]  # as if written before the option existed
    torch.save(state, checkpoint)
    with pytest.raises(ValueError, match=r"before the training option\(s\) \['max_grad_norm'\] existed"):
        Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, max_grad_norm=0.5, **FAST),
                run_dir=tmp_path).fit(resume=True)
    Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit(resume=True)


def test_resume_refuses_another_method_config(tiny_llama, tmp_path):
    config = TrainConfig(steps=3, **FAST)
    Trainer(build_method("lopt1", tiny_llama, prompt_len=4, rank=2), tiny_llama, small_task(), config,
            run_dir=tmp_path).fit()
    other = build_method("lopt1", tiny_llama, prompt_len=4, rank=3)
    with pytest.raises(ValueError, match=r"cannot resume.*'rank': \(2, 3\)"):
        Trainer(other, tiny_llama, small_task(), config, run_dir=tmp_path).fit(resume=True)


def test_resume_without_a_checkpoint_says_it_starts_fresh(tiny_llama, tmp_path):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    with pytest.warns(UserWarning, match="holds no checkpoint to resume: starting a fresh run"):
        Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit(resume=True)
    assert (tmp_path / "metrics.json").is_file()


def test_a_checkpoint_holding_pickled_objects_is_refused(tiny_llama, tmp_path):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["history"].append(Exploit())  # what an untrusted folder could hold
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="holds Python objects.*unpickling can run any code"):
        Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit(resume=True)
    assert Exploit.ran == 0


class Exploit:
    ran = 0

    def __reduce__(self):
        return (Exploit._run, ())

    @staticmethod
    def _run():
        Exploit.ran += 1
        return {}


def test_run_files_get_the_users_umask(tiny_llama, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        Trainer(build_method("prompt_tuning", tiny_llama, prompt_len=4), tiny_llama, small_task(),
                TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit()
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.json", "history.csv", "checkpoint.pt", "method/method.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_an_existing_run_folder_is_not_overwritten(tiny_llama, tmp_path):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit()
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(FileExistsError, match="resume=True"):
        Trainer(method, tiny_llama, small_task(), TrainConfig(steps=2, **FAST), run_dir=tmp_path).fit()
    assert (tmp_path / "metrics.json").read_text() == before


def test_nan_loss_stops_with_a_clear_message(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4)
    with torch.no_grad():
        method.prompt[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 1.*Lower the learning rate"):
        Trainer(method, tiny_llama, small_task(), TrainConfig(steps=3, **FAST)).fit()


def test_parameters_that_become_non_finite_stop_with_a_clear_message(tiny_llama):
    """A finite loss with an infinite gradient: clipping turns it into NaN and the step writes NaN into the factors.
    The step says so (not the dynamics' SVD of a NaN prompt, which failed with a LinAlgError in the grid)."""
    method = build_method("lopt2", tiny_llama, prompt_len=4, rank=2)
    method.V.register_hook(lambda grad: grad * float("inf"))
    trainer = Trainer(method, tiny_llama, small_task(), TrainConfig(steps=3, **FAST))
    assert trainer.dynamics is not None  # on by default: it would take the SVD of the prompt after the step
    with pytest.raises(TrainingDiverged, match=r"parameters \['V'\] became non-finite at step 1.*Lower the learning"):
        trainer.fit()


def test_batches_depend_only_on_seed_and_step(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=2)
    a = Trainer(method, tiny_llama, small_task(train=10), TrainConfig(steps=5, batch_size=4, seed=1, progress=False))
    b = Trainer(method, tiny_llama, small_task(train=10), TrainConfig(steps=5, batch_size=4, seed=1, progress=False))
    seen = [i for s in range(5) for i in a.batches.indices(s)]
    assert seen == [i for s in range(5) for i in b.batches.indices(s)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # epochs


def test_early_stopping_with_patience(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=2)
    result = Trainer(method, tiny_llama, small_task(), TrainConfig(steps=30, lr=1e-9, patience=1, **FAST)).fit()
    assert result.metrics["steps"] < 30


def test_generation_task_trains_on_target_loss(tiny_gpt2):
    """The target loss falls, and the reported loss is the mean cross-entropy over the target tokens."""
    task = short_generation_task()
    method = build_method("prefix_tuning", tiny_gpt2, prompt_len=4, reparam=False)
    result = Trainer(method, tiny_gpt2, task, TrainConfig(steps=12, lr=0.1, **FAST)).fit()
    # a random 2-layer model starts near log(V) = 5.57 and moves slowly: 5.51 → 5.43 here
    assert result.history["loss"].tail(3).mean() < 0.99 * result.history["loss"].head(3).mean()
    rows = task.examples("validation", expand_references=True)
    batch = task.collate(rows, tiny_gpt2.tokenizer)
    with torch.no_grad():
        h = method.hidden_states(tiny_gpt2, batch)
        logp = tiny_gpt2.logits(h).log_softmax(-1)
    targets = batch["target_mask"][:, 1:].bool()
    nll = -logp[:, :-1].gather(2, batch["input_ids"][:, 1:, None])[..., 0][targets]
    m = result.metrics["validation"]  # the validation rows scored by the trainer, against a hand-made NLL
    assert m["target_tokens"] == int(targets.sum())
    assert m["loss"] == pytest.approx(float(nll.mean()), rel=1e-4)
    assert m["perplexity"] == pytest.approx(float(nll.mean().exp()), rel=1e-4)


def test_bad_configs_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Trainer(build_method("zero_shot", tiny_llama), tiny_llama, small_task())


@pytest.mark.slow
def test_prompt_tuning_learns_builtin_sentiment_on_the_embedded_backbone(embedded):
    """Loss must fall clearly: the mean of the last 5 steps under 60% of the first 5."""
    task = load_task("sentiment")
    method = build_method("prompt_tuning", embedded, prompt_len=8, init="random")
    # a random start needs larger steps than recommended_lr, which the grid tuned from vocabulary rows
    result = Trainer(method, embedded, task, TrainConfig(steps=25, batch_size=8, lr=3e-2, eval_every=25,
                                                         eval_limit=64, progress=False)).fit()
    losses = result.history["loss"]
    assert losses.tail(5).mean() < 0.6 * losses.head(5).mean(), losses.tolist()
    assert backbone_unchanged_after(embedded, result)


def backbone_unchanged_after(backbone, result) -> bool:
    return all(not p.requires_grad and p.grad is None for p in backbone.model.parameters())


@pytest.mark.parametrize("name", ["prompt_tuning", "lopt1", "lopt2"])
def test_backbone_weights_unchanged_after_training(name, tiny):
    before = tiny.fingerprint()
    options = {"prompt_len": 4} if name == "prompt_tuning" else {"prompt_len": 4, "rank": 2}
    Trainer(build_method(name, tiny, **options), tiny, small_task(), TrainConfig(steps=3, **FAST)).fit()
    assert tiny.fingerprint() == before


def test_a_trainer_adopts_a_finished_run_of_exactly_its_own_and_nothing_else(tiny_llama, tmp_path):
    """An earlier run that trained the same method, options, config, task and backbone is copied and scored, not
    trained again (lesson 02 takes lesson 01's prompt tuning this way); any difference and it trains afresh."""
    task, config = small_task(), TrainConfig(steps=4, **FAST)
    first = Trainer(build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1), tiny_llama, task, config,
                    run_dir=tmp_path / "first").fit()
    steps = []
    method = build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1)
    again = Trainer(method, tiny_llama, task, TrainConfig(steps=4, **{**FAST, "progress": True}),
                    run_dir=tmp_path / "again", callbacks=(lambda trainer, record: steps.append(record),))
    assert again.adopt(tmp_path / "first")  # progress bars differ: not what is trained
    result = again.fit(resume=True)
    assert steps == [] and result.metrics["test"] == first.metrics["test"]  # scored, not trained
    assert result.history["loss"].tolist() == first.history["loss"].tolist()
    assert torch.equal(method.prompt, load_method(tmp_path / "first" / "method", tiny_llama).prompt)
    others = [(build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=2), config, task),  # another start
              (build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1), TrainConfig(steps=4, lr=1e-2, **FAST),
               task),  # another rate
              (build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1), TrainConfig(steps=6, **FAST), task),
              (build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1), config, small_task(train=16))]
    for i, (m, c, t) in enumerate(others):
        other = Trainer(m, tiny_llama, t, c, run_dir=tmp_path / f"other{i}")
        assert not other.adopt(tmp_path / "first"), i
        assert not (tmp_path / f"other{i}").exists()
    assert not Trainer(build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1), tiny_llama, task,
                       config).adopt(tmp_path / "first")  # no run folder of its own to copy into
    rate = build_method("prompt_tuning", tiny_llama, prompt_len=4).recommended_lr  # named here, the method's there
    named = Trainer(build_method("prompt_tuning", tiny_llama, prompt_len=4, seed=1), tiny_llama, task,
                    TrainConfig(steps=4, lr=rate, **FAST), run_dir=tmp_path / "named")
    assert named.adopt(tmp_path / "first") and named.fit(resume=True).metrics["test"] == first.metrics["test"]
