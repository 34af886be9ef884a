"""The kit's tasks: built in (``data/``, no files needed), or read from a folder of public-format files (or the hub).

``load_task("sentiment")`` needs no files; ``load_task("sst2", path=...)`` reads GLUE TSV;
``load_task("sst2", source="hf")`` asks the hub when online. Each task registers itself here in one line.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from lopt_core.data import formats, hub
from lopt_core.data.registry import register_task
from lopt_core.data.task import ALIASES, Task

BUILTIN_DIR = Path(os.environ.get("LOPT_BUILTIN_DATA", Path(__file__).resolve().parents[2] / "data"))

SENTIMENT = dict(template="Review: {text}\nSentiment:", label_words=(" negative", " positive"),
                 label_names=("negative", "positive"))
TOPIC = dict(template="News: {title} {description}\nTopic:",
             label_words=(" World", " Sports", " Business", " Technology"),
             label_names=("World", "Sports", "Business", "Sci/Tech"))
YESNO = dict(template="Passage: {passage}\nQuestion: {question}?\nAnswer:", label_words=(" no", " yes"),
             label_names=("no", "yes"))
DATA2TEXT = dict(template="Table: {table}\nText:")
INSTRUCT = dict(template="Instruction: {instruction}\nInput: {input}\nResponse:")
NLI = "Premise: {premise}\nHypothesis: {hypothesis}\nDoes the premise imply the hypothesis?\nAnswer:"


def _with_table(rows: list[dict]) -> list[dict]:
    return [{**r, "table": formats.linearise_mr(r["mr"])} for r in rows]


def _with_references(rows: list[dict]) -> list[dict]:
    return [{**r, "references": [r["output"]]} for r in rows]


# ------------------------------------------------------------------------------------ built in
def _builtin_splits(name: str, reader: Callable[[Path], list[dict]]) -> dict[str, list[dict]]:
    folder = BUILTIN_DIR / name
    if not folder.is_dir():
        raise FileNotFoundError(f"built-in data folder {folder} is missing; regenerate it with "
                                "`python data/make_builtin.py` or set LOPT_BUILTIN_DATA")
    return {role: reader(folder / f"{file}.jsonl") for role, file in
            (("train", "train"), ("validation", "dev"), ("test", "test"))}  # built-in dev.jsonl: validation


def _builtin(name: str, kind: str, reader, post=lambda rows: rows, description: str = "", **spec):
    """Register a task read from the kit's own data folder."""
    def build(path=None, source="auto", splits=None) -> Task:
        if source == "hf" or path is not None or splits is not None:
            raise ValueError(f"task {name!r} is built in: it takes no path, splits or source='hf'")
        data = {s: post(rows) for s, rows in _builtin_splits(name, reader).items()}
        return Task(name=name, kind=kind, splits=data, source=f"built-in ({BUILTIN_DIR / name})",
                    description=description, **spec).assign_roles()
    register_task(name, f"{description} (built in)")(build)


_builtin("sentiment", "classification", partial(formats.read_labelled_jsonl, fields=("text",), num_classes=2),
         description="Reviews of films, books, places and things: negative or positive.", **SENTIMENT)
_builtin("topic", "classification",
         partial(formats.read_labelled_jsonl, fields=("title", "description"), num_classes=4),
         description="Invented news headlines: World, Sports, Business or Technology.", **TOPIC)
_builtin("yesno", "classification",
         partial(formats.read_labelled_jsonl, fields=("passage", "question"), num_classes=2),
         description="Yes/no questions answered by a short passage.", **YESNO)
_builtin("restaurant", "generation", formats.read_data2text_jsonl, post=_with_table,
         description="Restaurant meaning representation → sentence, several references each.", **DATA2TEXT)
_builtin("instructions", "generation", formats.read_instruction_jsonl, post=_with_references,
         description="A mixture of small tasks under different instructions.", **INSTRUCT)


# ------------------------------------------------------------------------------ from files
def split_files(defaults: dict[str, str], chosen: dict[str, str] | None) -> dict[str, str]:
    """Split → file name: ``chosen`` overrides ``defaults`` split by split (``dev`` means validation), and a
    default whose file ``chosen`` gives to another split drops out: one file never serves two splits."""
    defaults = {ALIASES.get(s, s): f for s, f in defaults.items()}
    chosen = {ALIASES.get(s, s): f for s, f in (chosen or {}).items()}
    merged = {**{s: chosen.get(s, f) for s, f in defaults.items()}, **chosen}
    return {s: f for s, f in merged.items() if s in chosen or f not in chosen.values()}


def _file_task(name: str, kind: str, files: dict[str, str], reader, hf=None, post=lambda rows: rows,
               description: str = "", train_fallback: str | None = None, **spec):
    """Register a task read from a folder of files in a public format (or from the hub). ``train_fallback``:
    a held-out file to train on when the folder has no training file and ``splits`` chose no files."""
    def build(path=None, source="auto", splits=None) -> Task:
        if source == "hf":
            return Task(name=name, kind=kind, splits=hub.hub_splits(name, hf, post), source=f"hf:{hf[0]}",
                        description=description, **spec).assign_roles()
        folder = Path(path) if path is not None else _default_folder(name)
        mapping = split_files(files, splits)
        found = {s: folder / f for s, f in mapping.items() if (folder / f).is_file()}
        if not found:
            raise FileNotFoundError(
                f"task {name!r}: none of {', '.join(mapping.values())} found in {folder}. Pass path=... (CLI "
                f"--data), set LOPT_DATA_DIR to a folder holding {name}/, or use source='hf' when online.")
        notes = {}
        if train_fallback and "train" not in found and not splits and (folder / train_fallback).is_file():
            # no training file but the named held-out one: train on it (E2E's public trainset is often absent)
            found = {s: p for s, p in found.items() if p.name != train_fallback}
            found["train"] = folder / train_fallback
            notes["train"] = f"{train_fallback} ({files['train']} is absent)"
        data = {s: post(reader(p)) for s, p in found.items()}
        task = Task(name=name, kind=kind, splits=data, source=str(folder), description=description, **spec)
        task.split_notes.update(notes)
        return task.assign_roles()
    register_task(name, f"{description} (local files, or source='hf')")(build)


def _default_folder(name: str) -> Path:
    root = os.environ.get("LOPT_DATA_DIR")
    if root is None:
        raise FileNotFoundError(
            f"task {name!r} reads local files: pass path=... (CLI --data DIR) or set LOPT_DATA_DIR "
            f"to a folder that holds {name}/")
    return Path(root) / name


GLUE = {"train": "train", "dev": "validation", "test": "test"}
_file_task("sst2", "classification", {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           formats.read_glue_tsv, hf=("glue", "sst2", hub.hf_sst2, GLUE),
           description="SST-2 (GLUE TSV): binary sentence sentiment.", **SENTIMENT)
_file_task("agnews", "classification", {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
           formats.read_ag_news_csv, hf=("ag_news", None, hub.hf_ag_news, {"train": "train", "test": "test"}),
           description="AG News CSV: 4 news topics.", **TOPIC)
for _name, _labels in (("boolq", YESNO), ("rte", dict(template=NLI, label_words=(" yes", " no"),
                                                       label_names=("entailment", "not_entailment"))),
                       ("cb", dict(template=NLI, label_words=(" yes", " no", " maybe"),
                                   label_names=("entailment", "contradiction", "neutral")))):
    _file_task(_name, "classification", {"train": "train.jsonl", "dev": "val.jsonl"},
               partial(formats.read_superglue_jsonl, task=_name),
               hf=("super_glue", _name, hub.hf_superglue(_name), GLUE),
               description=f"SuperGLUE {_name.upper()} (JSONL).", **_labels)
_file_task("e2e", "generation", {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"},
           formats.read_e2e_csv, hf=("e2e_nlg", None, hub.hf_e2e, GLUE), post=_with_table,
           train_fallback="devset.csv",
           description="E2E NLG (CSV mr,ref): restaurant MR → text, references grouped per MR.", **DATA2TEXT)
_file_task("instruct_jsonl", "generation", {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"},
           formats.read_instruction_jsonl, post=_with_references,
           description="Your instruction data: JSONL with instruction, input, output.", **INSTRUCT)
