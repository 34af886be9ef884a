import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lopt_core.cli import _add_train_args, main


def run_train(tmp_path, *extra):
    out = tmp_path / "run"
    code = main(["train", "--method", "lopt2", "--task", "sentiment", "--backbone", "tiny-llama",
                 "--prompt-len", "6", "--rank", "2", "--steps", "4", "--batch-size", "4", "--eval-every", "2",
                 "--eval-limit", "8", "--train-limit", "16", "--no-progress", "--out", str(out), *extra])
    return code, out


def test_train_writes_a_run_folder_and_evaluate_rescores_it(tmp_path, capsys):
    code, out = run_train(tmp_path)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "lopt2" and metrics["trainable_parameters"] == 2 * 2 * 64
    config = json.loads((out / "config.json").read_text())
    assert config["method_config"]["prompt_len"] == 6 and config["backbone_spec"] == "tiny-llama"
    assert main(["evaluate", str(out), "--split", "validation"]) == 0
    again = json.loads((out / "evaluate-validation.json").read_text())["validation"]
    assert again["accuracy"] == metrics["validation"]["accuracy"] and again["n"] == 200
    assert "validation: n=200" in capsys.readouterr().out


def test_resume_flag_continues_a_run(tmp_path):
    code, out = run_train(tmp_path)
    assert code == 0
    code, _ = run_train(tmp_path, "--resume")
    assert code == 0  # nothing left to do: the checkpoint is at the last step


def test_rerunning_into_a_used_folder_is_refused(tmp_path, capsys):
    assert run_train(tmp_path)[0] == 0
    assert run_train(tmp_path)[0] == 2
    assert "already holds a run" in capsys.readouterr().err


def test_options_of_other_methods_are_refused(tmp_path, capsys):
    code = main(["train", "--method", "prompt_tuning", "--task", "sentiment", "--backbone", "tiny-llama",
                 "--rank", "2", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not take --rank" in err and "--prompt-len" in err


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--method", "lopt1", "--task", "sentiment", "--backbone", "tiny-llama",
                 "--prompt-len", "4", "--rank", "9", "--out", str(tmp_path / "x")])
    assert code == 2 and "rank <= 4" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_info_lists_methods_tasks_and_versions(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("torch", "transformers", "lopt1", "lopt2", "prompt_tuning", "sentiment", "sst2", "cache",
                 "tiny-llama-bos", "tiny-gpt2", "tiny-gemma3", "tiny-qwen2", "sliding window"):
        assert word in out


def test_console_script_is_installed():
    exe = shutil.which("lopt-kit") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "lopt-kit")
    if not Path(exe).exists():
        pytest.skip("lopt-kit console script not on PATH (package not installed with pip)")
    done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout and "evaluate" in done.stdout


def test_predict_serves_several_runs_in_one_batch(tmp_path, capsys):
    code, first = run_train(tmp_path)
    assert code == 0
    second = tmp_path / "run2"
    assert main(["train", "--method", "prefix_tuning", "--task", "restaurant", "--backbone", "tiny-llama",
                 "--prompt-len", "2", "--reparam-dim", "8", "--steps", "2", "--batch-size", "2", "--eval-every", "2",
                 "--eval-limit", "2", "--final-eval-limit", "2", "--train-limit", "4", "--no-progress",
                 "--out", str(second)]) == 0
    capsys.readouterr()
    code = main(["predict", str(first), str(second), "--row", '{"text": "a lovely film"}',
                 "--row", '{"table": "name : A | food : French", "mr": "name[A], food[French]"}',
                 "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "[run]" in out and "[run2]" in out and ("negative" in out or "positive" in out)
    assert main(["predict", str(first)]) == 2


def test_every_method_and_training_flag_shows_its_help_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("r: the rank of the factorised prompt (default: lopt1, lopt2: 2)",
                 "m: the generators' bottleneck width (default: iapt: 32)",
                 "train through the MLP reparameterisation",
                 "--lr FLOAT learning rate (default: the method's recommended rate)",
                 "--steps INT optimiser steps (default: 60)",
                 "--precision {auto,fp32,bf16,fp16}", "--backbone BACKBONE embedded | tiny-llama | tiny-llama-bos"):
        assert text in out, text
    parser = argparse.ArgumentParser()
    _add_train_args(parser)
    silent = [a.option_strings[-1] for a in parser._actions
              if a.help != argparse.SUPPRESS and "-h" not in a.option_strings
              and "default" not in a.help and "required" not in a.help]
    assert not silent, f"flags whose --help shows no default: {silent}"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--method", "lopt2", "--task", "sentiment", "--backbone", "tiny-llama", "--device", "cuda",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: device='cuda' was asked for but CUDA is not available")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_errors_print_without_keyerror_quotes(tmp_path, capsys):
    assert main(["train", "--method", "lopt9", "--task", "sentiment", "--backbone", "tiny-llama"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown method 'lopt9'; registered methods:")
    assert main(["train", "--method", "lopt1", "--task", "sentimant", "--backbone", "tiny-llama"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown task 'sentimant'")


def test_wrong_paths_are_one_line_errors(tmp_path, capsys):
    """A path the user named that is not what the command reads: its message alone, exit status 2."""
    cases = {"is not a run folder": ["evaluate", str(tmp_path)],
             "task file not found": ["train", "--method", "lopt1", "--task-file", str(tmp_path / "nope.json"),
                                     "--backbone", "tiny-llama"],
             "is not a folder": ["import-peft", str(tmp_path / "nope"), "--out", str(tmp_path / "x"),
                                 "--task", "sentiment", "--backbone", "tiny-llama"],
             "notebook not found": ["sweep", str(tmp_path / "nope.ipynb"), "-p", "x", "1"]}
    for message, argv in cases.items():
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_a_split_the_task_lacks_is_a_one_line_error(tmp_path, capsys):
    code, out = run_train(tmp_path)
    assert code == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--split", "dev"]) == 2
    assert capsys.readouterr().err.startswith("error: task 'sentiment' has no 'dev' split")


@pytest.mark.parametrize("target, error", [("lopt_core.data.load_task", KeyError),
                                           ("lopt_core.methods.build_method", TypeError)])
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, target, error):
    """Only errors the kit explains become one-line exits: a KeyError or TypeError from inside is a bug."""
    def broken(*args, **kwargs):
        raise error("a bug deep inside")

    monkeypatch.setattr(target, broken)
    with pytest.raises(error, match="a bug deep inside"):
        main(["train", "--method", "lopt1", "--task", "sentiment", "--backbone", "tiny-llama",
              "--out", str(tmp_path / "x")])
