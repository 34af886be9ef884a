"""Tasks: data (built-in, local files, Hugging Face datasets), templates, verbalisers, batching.

A task turns a row into a prompt text (``template``) and a target: a class whose label word
follows the prompt (rank classification with a verbaliser), or a text (generation, loss on the
target tokens only). ``load_task("sentiment")`` needs no files; ``load_task("sst2", path=...)``
reads GLUE TSV; ``load_task("sst2", source="hf")`` asks the hub when online.

Split roles (``SPLITS``): ``train``; ``validation``, for selection, early stopping and nothing that is
reported; ``test``, what tables report. A task loaded without a validation split carves one from
train; a task whose only labelled held-out split is a dev set (SuperGLUE, the hub copy of GLUE) reports
that dev set as test and carves its validation from train. Every carve is seeded, takes
min(500 rows, 10%) and keeps rows of one source (one E2E meaning representation) on one side; what was
done is in ``task.split_notes`` and its summary.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from lopt_core.data import formats
from lopt_core.data.batching import LengthPolicy, input_limit, pad, pad_id
from lopt_core.data.formats import DataError  # noqa: F401  (re-exported for users)

BUILTIN_DIR = Path(os.environ.get("LOPT_BUILTIN_DATA", Path(__file__).resolve().parents[2] / "data"))
SPLITS = ("train", "validation", "test")
ALIASES = {"dev": "validation", "val": "validation", "valid": "validation"}  # accepted when loading files
CARVE_SEED, CARVE_FRACTION, CARVE_MOST = 0, 0.1, 500


@dataclass(frozen=True)
class Verbalizer:
    """Token ids of each class's label word; words of several tokens are scored as sequences."""

    words: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]

    @property
    def single_token(self) -> bool:
        return all(len(ids) == 1 for ids in self.token_ids)

    @classmethod
    def build(cls, words, tokenizer) -> Verbalizer:
        ids = tuple(tuple(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words)
        for word, seq in zip(words, ids):
            if not seq:
                raise ValueError(f"label word {word!r} tokenises to nothing")
        if len(set(ids)) != len(ids):
            raise ValueError(f"label words {words} are not distinct after tokenisation: {ids}")
        return cls(tuple(words), ids)


@dataclass
class Task:
    """A named task: rows per split, a prompt template and its targets.

    ``kind`` is ``"classification"`` (rows carry an integer ``label``; ``label_words`` give one
    word per class) or ``"generation"`` (rows carry ``references``; training uses each one).
    """

    name: str
    kind: str
    template: str
    splits: dict[str, list[dict]]
    label_words: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    target_template: str = " {target}"
    source: str = "built-in"
    description: str = ""
    split_notes: dict[str, str] = field(default_factory=dict)  # where each split came from, when not a file
    _verbalizers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.kind not in ("classification", "generation"):
            raise ValueError(f"task kind must be 'classification' or 'generation', not {self.kind!r}")
        if self.kind == "classification" and len(self.label_words) < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs at least 2 label words")

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    @property
    def fields(self) -> list[str]:
        """The row fields the template reads."""
        return formats.template_fields(self.template)

    def prompt(self, row: dict) -> str:
        """The prompt text for a row (the "instruction" part, before any label or target).

        A row whose template fields are all empty (or only whitespace) is an error: the model would be
        asked about nothing."""
        missing = [f for f in self.fields if f not in row]
        if missing:
            raise KeyError(f"task {self.name!r}: the row has no {', '.join(map(repr, missing))} "
                           f"(its template reads {self.fields}): {_short(row)}")
        if self.fields and not any(str(row[f]).strip() for f in self.fields):
            raise ValueError(f"task {self.name!r}: empty text in the row {_short(row)}")
        text = self.template.format(**row)
        return re.sub(r"[ \t]+(\n|$)", r"\1", re.sub(r"[ \t]{2,}", " ", text))

    def examples(self, split: str, limit: int | None = None, expand_references: bool = False) -> list[dict]:
        """Rows of a split (first ``limit``); with ``expand_references`` one row per reference."""
        if split not in self.splits:
            have = ", ".join(self.splits) or "none"
            hint = (f" The kit calls it {ALIASES[split]!r}: it selects checkpoints and is never reported; tables "
                    "report 'test'." if split in ALIASES else " Pass split files with splits={...} or pick another.")
            raise KeyError(f"task {self.name!r} has no {split!r} split (it has: {have}).{hint}")
        rows = self.splits[split][:limit] if limit else self.splits[split]
        if expand_references and self.kind == "generation":
            rows = [{**r, "target": ref} for r in rows for ref in r["references"]]
        return rows

    # ------------------------------------------------------------------------------ split roles
    def carve(self, new: str, source: str = "train", seed: int = CARVE_SEED) -> Task:
        """Move min(500 rows, 10%) of ``source`` into a new split ``new`` (in place; returns the task).

        Rows are drawn by source text with ``seed``: all rows with the same prompt (the references of one
        E2E meaning representation, a repeated sentence) land on the same side."""
        rows = self.splits[source]
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(self.prompt(row), []).append(i)
        want = min(CARVE_MOST, max(1, round(CARVE_FRACTION * len(rows))))
        if len(groups) < 2:
            raise ValueError(f"task {self.name!r}: cannot carve {new!r} from {len(rows)} {source} rows of "
                             f"{len(groups)} source(s); give the task a {new} split")
        order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
        keys, taken = list(groups), set()
        for g in order:
            if len(taken) >= want or len(taken) + len(groups[keys[g]]) >= len(rows):
                break
            taken.update(groups[keys[g]])
        self.splits[new] = [r for i, r in enumerate(rows) if i in taken]
        self.splits[source] = [r for i, r in enumerate(rows) if i not in taken]
        self.split_notes[new] = (f"carved from {source}: {len(taken)} of {len(rows)} rows (grouped by source, "
                                 f"seed {seed})")
        return self

    def assign_roles(self, seed: int = CARVE_SEED) -> Task:
        """Give the task a validation and a test split (see the module docstring); in place."""
        self.splits = {ALIASES.get(k, k): v for k, v in self.splits.items()}
        if "train" not in self.splits:
            return self  # an evaluation-only task: nothing to select on
        if "test" not in self.splits and "validation" in self.splits:
            self.splits["test"] = self.splits.pop("validation")
            self.split_notes["test"] = ("the labelled dev set, reported as test (the task has no labelled test "
                                        "set); validation is carved from train")
        if "validation" not in self.splits:
            self.carve("validation", "train", seed)
        return self

    def copy(self) -> Task:
        """A task with its own split lists (rows shared), to carve without touching the original."""
        return dataclasses.replace(self, splits=dict(self.splits), split_notes=dict(self.split_notes),
                                   _verbalizers={})

    def verbalizer(self, tokenizer) -> Verbalizer:
        key = (id(tokenizer), tuple(self.label_words))  # label words changed: a new verbaliser
        if key not in self._verbalizers:
            self._verbalizers[key] = Verbalizer.build(self.label_words, tokenizer)
        return self._verbalizers[key]

    def answer_tokens(self, tokenizer) -> int:
        """Positions scoring adds after a prompt: the longest label word when words have several tokens
        (they are scored as sequences), else none."""
        if self.kind != "classification":
            return 0
        verbalizer = self.verbalizer(tokenizer)
        return 0 if verbalizer.single_token else max(len(ids) for ids in verbalizer.token_ids)

    def encode(self, row: dict, tokenizer, policy: LengthPolicy | None = None, index=None) -> tuple[list, list]:
        """Token ids (prompt, target) of one row; the target (generation rows) ends with EOS. With a
        ``policy``, the pair is fitted to its limit (``lopt_core.data.batching.LengthPolicy``)."""
        p = tokenizer(self.prompt(row), add_special_tokens=True)["input_ids"]
        t = []
        if self.kind == "generation" and "target" in row:
            if not str(row["target"]).strip():
                raise ValueError(f"task {self.name!r}: empty target in the row {_short(row)}")
            t = tokenizer(self.target_template.format(target=row["target"]), add_special_tokens=False)["input_ids"]
            t = t + [tokenizer.eos_token_id]
        return policy.fit(p, t, index) if policy is not None else (p, t)

    def length_policy(self, backbone, method=None, max_length: int = 256, where: str | None = None) -> LengthPolicy:
        """Rows of at most ``max_length`` tokens, and never more than the backbone's context leaves beside the
        method's extra positions (and label words of several tokens, scored after the prompt); longer ones are
        cut (prompt from the left, BOS kept). The one policy of collate, evaluate and the Trainer."""
        limit = input_limit(backbone, method, max_length, new_tokens=self.answer_tokens(backbone.tokenizer))
        return LengthPolicy(limit, where or f"task {self.name!r}", backbone.tokenizer.bos_token_id)

    def collate(self, rows: list[dict], tokenizer, max_length: int = 256, policy: LengthPolicy | None = None,
                backbone=None, method=None) -> dict[str, torch.Tensor]:
        """Right-padded batch, each row fitted to ``max_length`` tokens and, given the ``backbone`` (and the
        ``method``), to what its context leaves beside the method's positions (or to ``policy``'s limit; a
        ``policy`` passed in collects what was cut, for one warning per call of its owner).

        Shapes: input_ids, attention_mask, prompt_mask (B, T); labels (B,) for classification;
        target_mask (B, T) marks the target tokens (and EOS) for generation rows with a target.
        """
        own = policy is None
        if own:
            policy = (self.length_policy(backbone, method, max_length) if backbone is not None
                      else LengthPolicy(max_length, where=f"task {self.name!r}", bos_id=tokenizer.bos_token_id))
        pairs = [self.encode(row, tokenizer, policy, i) for i, row in enumerate(rows)]
        if own:
            policy.warn()
        input_ids, attention_mask = pad([p + t for p, t in pairs], pad_id(tokenizer))
        prompt_mask, _ = pad([[1] * len(p) + [0] * len(t) for p, t in pairs], 0)
        target_mask, _ = pad([[0] * len(p) + [1] * len(t) for p, t in pairs], 0)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "prompt_mask": prompt_mask}
        if self.kind == "classification":
            batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        elif any(t for _, t in pairs):
            batch["target_mask"] = target_mask
        return batch

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        extra = f", labels {list(self.label_words)}" if self.kind == "classification" else ""
        notes = "".join(f"\n  {k}: {v}" for k, v in self.split_notes.items())
        return f"Task {self.name!r} ({self.kind}; {sizes}{extra}; source: {self.source}){notes}"

    def __repr__(self) -> str:
        return self.summary()


def _short(row: dict, width: int = 120) -> str:
    text = repr({k: v for k, v in row.items() if k != "references"})
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------------------------- registry
_TASKS: dict[str, Callable[..., Task]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_task(name: str, description: str = ""):
    """Decorator: register a function ``(path=None, source="auto", splits=None) -> Task``."""
    def wrap(fn):
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = fn
        _DESCRIPTIONS[name] = description
        return fn
    return wrap


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def task_description(name: str) -> str:
    return _DESCRIPTIONS[name]


def load_task(name: str, path: str | os.PathLike | None = None, source: str = "auto",
              splits: dict[str, str] | None = None) -> Task:
    """Load a registered task.

    Args:
        name: one of ``list_tasks()``.
        path: folder of the task's files (file-backed tasks); default ``$LOPT_DATA_DIR/<name>``.
        source: ``"auto"`` (built-in data or local files), ``"files"`` or ``"hf"`` (hub, online).
        splits: map split → file name inside ``path`` to override the defaults, e.g.
            ``{"train": "devset.csv", "test": "testset_w_refs.csv"}`` for E2E without its train file (its
            validation is then carved from devset.csv's meaning representations). ``dev`` means validation.
    """
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}")
    if source not in ("auto", "files", "hf"):
        raise ValueError(f"source must be 'auto', 'files' or 'hf', not {source!r}")
    return _TASKS[name](path=path, source=source, splits=splits)


# ------------------------------------------------------------------------------ task definitions
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


def _builtin_splits(name: str, reader: Callable[[Path], list[dict]]) -> dict[str, list[dict]]:
    folder = BUILTIN_DIR / name
    if not folder.is_dir():
        raise FileNotFoundError(f"built-in data folder {folder} is missing; regenerate it with "
                                "`python data/make_builtin.py` or set LOPT_BUILTIN_DATA")
    return {role: reader(folder / f"{file}.jsonl") for role, file in
            (("train", "train"), ("validation", "dev"), ("test", "test"))}  # built-in dev.jsonl: validation


def _builtin(name: str, kind: str, reader, post=lambda rows: rows, description: str = "", **spec):
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


def _file_task(name: str, kind: str, files: dict[str, str], reader, hf=None, post=lambda rows: rows,
               description: str = "", train_fallback: tuple[str, str] | None = None, **spec):
    """Register a task read from a folder of files in a public format (or from the hub)."""
    def build(path=None, source="auto", splits=None) -> Task:
        if source == "hf":
            return Task(name=name, kind=kind, splits=_hf_splits(name, hf, post), source=f"hf:{hf[0]}",
                        description=description, **spec).assign_roles()
        folder = Path(path) if path is not None else _default_folder(name)
        mapping = {**files, **(splits or {})} if splits is None else dict(splits)
        found = {s: folder / f for s, f in mapping.items() if (folder / f).is_file()}
        if not found:
            expected = ", ".join(mapping.values())
            raise FileNotFoundError(
                f"task {name!r}: none of {expected} found in {folder}. Pass path=... (CLI --data), set "
                f"LOPT_DATA_DIR to a folder holding {name}/, or use source='hf' when online.")
        notes = {}
        if train_fallback and "train" not in found and splits is None and (folder / train_fallback[1]).is_file():
            # no training file but the named held-out one: train on it (E2E's public trainset is often absent)
            found["train"] = found.pop(train_fallback[0], folder / train_fallback[1])
            notes["train"] = f"{train_fallback[1]} ({files['train']} is absent)"
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


def _hf_splits(name: str, hf, post) -> dict[str, list[dict]]:
    try:
        import datasets
    except ImportError as err:
        raise ImportError("source='hf' needs the package datasets: pip install datasets") from err
    dataset, subset, convert, split_names = hf
    from lopt_core.utils import hub_offline_mode, hub_reachable

    if hub_offline_mode() or not hub_reachable():
        raise ConnectionError(f"cannot load {dataset}{'/' + subset if subset else ''} from the Hugging Face hub: "
                              f"this machine is offline. Download the files and use load_task({name!r}, path=...)")
    try:
        loaded = datasets.load_dataset(dataset, subset)
    except Exception as err:  # network, hub or cache errors all land here
        raise ConnectionError(
            f"could not load {dataset}{'/' + subset if subset else ''} from the Hugging Face hub: {err}. "
            f"Offline, download the files and use load_task({name!r}, path=...)") from err
    out = {}
    for ours, theirs in split_names.items():
        if theirs in loaded:
            rows = convert(list(loaded[theirs])) if convert is formats.hf_e2e else \
                formats._hf_rows(loaded[theirs], convert, f"{dataset}/{theirs}")
            if rows:
                out[ours] = post(rows)
    return out


GLUE = {"train": "train", "dev": "validation", "test": "test"}
_file_task("sst2", "classification", {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
           formats.read_glue_tsv, hf=("glue", "sst2", formats.hf_sst2, GLUE),
           description="SST-2 (GLUE TSV): binary sentence sentiment.", **SENTIMENT)
_file_task("agnews", "classification", {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
           formats.read_ag_news_csv, hf=("ag_news", None, formats.hf_ag_news, {"train": "train", "test": "test"}),
           description="AG News CSV: 4 news topics.", **TOPIC)
for _name, _labels in (("boolq", YESNO), ("rte", dict(template=NLI, label_words=(" yes", " no"),
                                                       label_names=("entailment", "not_entailment"))),
                       ("cb", dict(template=NLI, label_words=(" yes", " no", " maybe"),
                                   label_names=("entailment", "contradiction", "neutral")))):
    _file_task(_name, "classification", {"train": "train.jsonl", "dev": "val.jsonl"},
               partial(formats.read_superglue_jsonl, task=_name),
               hf=("super_glue", _name, formats.hf_superglue(_name), GLUE),
               description=f"SuperGLUE {_name.upper()} (JSONL).", **_labels)
_file_task("e2e", "generation", {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"},
           formats.read_e2e_csv, hf=("e2e_nlg", None, formats.hf_e2e, GLUE), post=_with_table,
           train_fallback=("dev", "devset.csv"),
           description="E2E NLG (CSV mr,ref): restaurant MR → text, references grouped per MR.", **DATA2TEXT)
_file_task("instruct_jsonl", "generation", {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"},
           formats.read_instruction_jsonl, post=_with_references,
           description="Your instruction data: JSONL with instruction, input, output.", **INSTRUCT)


def load_task_file(path: str | os.PathLike) -> Task:
    """A task described by a JSON (or YAML) spec of your own CSV, TSV or JSONL files: no Python needed
    (``lopt_core.data.task_files`` documents the fields)."""
    from lopt_core.data.task_files import load_task_file as load

    return load(path)
