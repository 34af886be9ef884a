"""Readers for the public file formats, each returning rows in the kit's own schema.

Row schemas (what every reader returns, whatever the source):
  sentiment  {"text", "label"}                 topic    {"title", "description", "label"}
  yes/no     {"passage", "question", "label"}  pairs    {"premise", "hypothesis", "label"}
  data2text  {"mr", "references": [str, ...]}  instruct {"instruction", "input", "output", "task"?}

Every malformed row raises ``DataError`` naming the file and the line.
"""
from __future__ import annotations

import csv
import json
import re
import string
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from lopt_core.utils import KitError

Row = dict


class DataError(KitError, ValueError):
    """A data file that cannot be read as its format says; the message names file and line."""


def _fail(path: Path, line: int, msg: str) -> DataError:
    return DataError(f"{path}:{line}: {msg}")


def _text(value, path: Path, line: int, column: str) -> str:
    if value is None or not str(value).strip():
        raise _fail(path, line, f"empty text in column {column!r}")
    return str(value).strip()


def _label(value, mapping: dict, path: Path, line: int) -> int:
    key = value.strip() if isinstance(value, str) else value
    if key not in mapping:
        allowed = ", ".join(repr(k) for k in mapping)
        raise _fail(path, line, f"unknown label {value!r}; expected one of {allowed}")
    return mapping[key]


def _need(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def template_fields(template: str) -> list[str]:
    """The row fields a prompt template reads, in order (``"{text} =" → ["text"]``)."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file; a line that is not a JSON object is
    an error naming the file and the line. The one JSONL reader of the kit."""
    path = _need(path)
    records = []
    with path.open(encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as err:
                raise _fail(path, line, f"not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise _fail(path, line, "each line must be a JSON object")
            records.append((line, obj))
    return records


def row_preview(row: dict, width: int = 120) -> str:
    """A row as an error message shows it: its fields but the references, cut to ``width`` characters."""
    text = repr({k: v for k, v in row.items() if k != "references"})
    return text if len(text) <= width else text[: width - 1] + "…"


def read_glue_tsv(path: str | Path, text_column: str = "sentence") -> list[Row]:
    """GLUE-style TSV with a header (SST-2: ``sentence<TAB>label``, label 0/1)."""
    path = _need(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise _fail(path, 1, "empty file")
        for column in (text_column, "label"):
            if column not in header:
                raise _fail(path, 1, f"missing column {column!r} (header is {header})")
        ti, li = header.index(text_column), header.index("label")
        rows = []
        for i, rec in enumerate(reader, 2):
            if len(rec) != len(header):
                raise _fail(path, i, f"expected {len(header)} tab-separated fields, found {len(rec)}")
            rows.append({"text": _text(rec[ti], path, i, text_column),
                         "label": _label(rec[li], {"0": 0, "1": 1}, path, i)})
    return rows


AG_HEADER = ["Class Index", "Title", "Description"]


def read_ag_news_csv(path: str | Path) -> list[Row]:
    """AG News CSV, with the ``Class Index,Title,Description`` header or headerless; classes 1–4."""
    path = _need(path)
    with path.open(encoding="utf-8", newline="") as f:
        records = list(csv.reader(f))
    start = 1 if records and records[0] == AG_HEADER else 0
    rows = []
    for i, rec in enumerate(records[start:], start + 1):
        if len(rec) != 3:
            raise _fail(path, i, f"expected 3 columns (class, title, description), found {len(rec)}")
        label = _label(rec[0], {"1": 0, "2": 1, "3": 2, "4": 3}, path, i)
        rows.append({"title": _text(rec[1], path, i, "Title"),
                     "description": rec[2].replace("\\\\", " ").strip(), "label": label})
    return rows


SUPERGLUE = {
    "boolq": (("question", "passage"), {False: 0, True: 1}),  # 0 and 1 hash like False and True
    "rte": (("premise", "hypothesis"), {"entailment": 0, "not_entailment": 1}),
    "cb": (("premise", "hypothesis"), {"entailment": 0, "contradiction": 1, "neutral": 2}),
}


def read_superglue_jsonl(path: str | Path, task: str) -> list[Row]:
    """SuperGLUE JSONL for ``boolq`` (bool labels), ``rte`` and ``cb`` (string labels)."""
    if task not in SUPERGLUE:
        raise ValueError(f"unknown SuperGLUE task {task!r}; known: {', '.join(SUPERGLUE)}")
    columns, mapping = SUPERGLUE[task]
    return _read_labelled(path, columns, mapping)


def _read_labelled(path: str | Path, fields: Sequence[str], mapping: dict) -> list[Row]:
    """JSON lines holding text ``fields`` and a ``label`` that ``mapping`` turns into a class index."""
    path = _need(path)
    rows = []
    for i, obj in read_jsonl(path):
        for column in (*fields, "label"):
            if column not in obj:
                raise _fail(path, i, f"missing field {column!r}")
        row = {c: _text(obj[c], path, i, c) for c in fields}
        row["label"] = _label(obj["label"], mapping, path, i)
        rows.append(row)
    return rows


MR_ITEM = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*,?")


def parse_mr(mr: str) -> list[tuple[str, str]]:
    """``"name[The Eagle], food[French]"`` → ``[("name", "The Eagle"), ("food", "French")]``."""
    items, pos = [], 0
    for m in MR_ITEM.finditer(mr):
        if m.start() != pos:
            break
        items.append((m.group(1), m.group(2)))
        pos = m.end()
    if not items or pos != len(mr):
        raise ValueError(f"not a meaning representation: {mr!r} (expected 'field[value], ...')")
    return items


def linearise_mr(mr: str) -> str:
    """The prefix-tuning paper's table linearisation: ``name : The Eagle | food : French``."""
    return " | ".join(f"{k} : {v}" for k, v in parse_mr(mr))


def read_e2e_csv(path: str | Path) -> list[Row]:
    """E2E NLG CSV (``mr,ref``; one row per reference): references grouped per MR, in file order."""
    path = _need(path)
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise _fail(path, 1, "empty file")
        lower = [h.strip().lower() for h in header]
        for column in ("mr", "ref"):
            if column not in lower:
                raise _fail(path, 1, f"missing column {column!r} (header is {header})")
        mi, ri = lower.index("mr"), lower.index("ref")
        for rec in reader:
            line = reader.line_num
            if len(rec) != len(header):
                raise _fail(path, line, f"expected {len(header)} columns, found {len(rec)}")
            mr = _text(rec[mi], path, line, "mr")
            try:
                parse_mr(mr)
            except ValueError as err:
                raise _fail(path, line, str(err)) from None
            grouped.setdefault(mr, []).append(_text(rec[ri], path, line, "ref"))
    return [{"mr": mr, "references": refs} for mr, refs in grouped.items()]


def read_instruction_jsonl(path: str | Path) -> list[Row]:
    """Instruction data: JSON lines with ``instruction``, ``input`` (may be empty) and ``output``;
    optional ``task`` (a name, for per-task scores) and ``answer_type`` ("closed": scored by exact
    match, "free": by ROUGE-L; when absent, outputs of up to 3 words count as closed)."""
    path = _need(path)
    rows = []
    for i, obj in read_jsonl(path):
        for column in ("instruction", "input", "output"):
            if column not in obj:
                raise _fail(path, i, f"missing field {column!r}")
        row = {"instruction": _text(obj["instruction"], path, i, "instruction"),
               "input": str(obj["input"] or "").strip(),
               "output": _text(obj["output"], path, i, "output")}
        if "task" in obj:
            row["task"] = str(obj["task"])
        if "answer_type" in obj:
            if obj["answer_type"] not in ("closed", "free"):
                raise _fail(path, i, f"answer_type must be 'closed' or 'free', got {obj['answer_type']!r}")
            row["answer_type"] = obj["answer_type"]
        rows.append(row)
    return rows


def read_labelled_jsonl(path: str | Path, fields: Sequence[str], num_classes: int) -> list[Row]:
    """The kit's own classification JSONL: the text ``fields`` plus an integer ``label``."""
    return _read_labelled(path, fields, {i: i for i in range(num_classes)})


def read_data2text_jsonl(path: str | Path) -> list[Row]:
    """The kit's own data-to-text JSONL: ``mr`` plus a non-empty list of ``references``."""
    path = _need(path)
    rows = []
    for i, obj in read_jsonl(path):
        if "mr" not in obj or "references" not in obj:
            raise _fail(path, i, "each line needs 'mr' and 'references'")
        refs = obj["references"]
        if not isinstance(refs, list) or not refs:
            raise _fail(path, i, "'references' must be a non-empty list of strings")
        mr = _text(obj["mr"], path, i, "mr")
        try:
            parse_mr(mr)
        except ValueError as err:
            raise _fail(path, i, str(err)) from None
        rows.append({"mr": mr, "references": [_text(r, path, i, "references") for r in refs]})
    return rows
