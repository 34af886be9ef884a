"""A task's data: rows per split, the prompt template, split roles and the verbaliser.

A task turns a row into a prompt text (``template``) and a target: a class whose label word
follows the prompt (rank classification with a verbaliser), or a text (generation, loss on the
target tokens only). Turning rows into token ids and batches is ``lopt_core.data.encoding``'s job;
the ``Task`` methods of that name (``encode``, ``collate``, ...) are its front.

Split roles (``SPLITS``): ``train``; ``validation``, for selection, early stopping and nothing that is
reported; ``test``, what tables report. A task loaded without a validation split carves one from
train; a task whose only labelled held-out split is a dev set (SuperGLUE, the hub copy of GLUE) reports
that dev set as test and carves its validation from train. Every carve is seeded, takes
min(500 rows, 10%) and keeps rows of one source (one E2E meaning representation) on one side; what was
done is in ``task.split_notes`` and its summary.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field

import torch

from lopt_core.data import encoding
from lopt_core.data.formats import row_preview, template_fields

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
        for word, seq in zip(words, ids, strict=True):
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
        return template_fields(self.template)

    def prompt(self, row: dict) -> str:
        """The prompt text for a row (the "instruction" part, before any label or target).

        A row whose template fields are all empty (or only whitespace) is an error: the model would be
        asked about nothing."""
        missing = [f for f in self.fields if f not in row]
        if missing:
            raise KeyError(f"task {self.name!r}: the row has no {', '.join(map(repr, missing))} "
                           f"(its template reads {self.fields}): {row_preview(row)}")
        if self.fields and not any(str(row[f]).strip() for f in self.fields):
            raise ValueError(f"task {self.name!r}: empty text in the row {row_preview(row)}")
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

    def limit(self, split: str, n: int | None) -> Task:
        """Keep the first ``n`` rows of ``split`` (in place; returns the task); ``None`` (or 0, as for
        ``examples``) keeps them all. A cut adds no split note: the split keeps its role and its source."""
        if n:
            self.splits[split] = self.examples(split, n)
        return self

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

    # ---------------------------------------------------------------------------------- encoding
    # Token ids and batches are lopt_core.data.encoding's: its functions take the task first, so they serve
    # as its methods (task.collate(rows, tokenizer, ...) is encoding.collate(task, rows, tokenizer, ...)).
    answer_tokens = encoding.answer_tokens
    encode = encoding.encode
    length_policy = encoding.length_policy
    collate = encoding.collate

    def fingerprint(self) -> str:
        """A short hash of what a run of this task depends on: its rows in every split, template, targets and label
        words (a run's config.json keeps it, so that a run is adopted only by a task with the same data)."""
        content = {"splits": self.splits, "template": self.template, "target_template": self.target_template,
                   "label_words": list(self.label_words), "kind": self.kind}
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        extra = f", labels {list(self.label_words)}" if self.kind == "classification" else ""
        notes = "".join(f"\n  {k}: {v}" for k, v in self.split_notes.items())
        return f"Task {self.name!r} ({self.kind}; {sizes}{extra}; source: {self.source}){notes}"

    def __repr__(self) -> str:
        return self.summary()
