"""Your own labelled data as a task, with no Python: a small JSON (or YAML) spec beside the files.

    {
      "name": "reviews",
      "kind": "classification",
      "files": {"train": "train.csv", "test": "test.csv"},
      "text_columns": ["text"],
      "label_column": "label",
      "label_words": {"0": " negative", "1": " positive"},
      "template": "Review: {text}\\nSentiment:"
    }

``lopt-kit train --task-file reviews.json ...`` or ``load_task_file("reviews.json")``. Fields:

- ``name``, ``kind`` (``classification`` | ``generation``), ``files`` (split → a CSV, TSV or JSONL path,
  relative to the spec; ``dev`` means validation), ``text_columns`` (the columns the template reads);
- classification: ``label_column`` and ``label_words`` (label value as written in the file → its word;
  the classes are in this order); generation: ``target_column`` (rows with the same prompt are one
  source with several references, as in E2E);
- optional: ``template`` (default: one ``Column: {column}`` line per text column, then ``Answer:``),
  ``columns`` (column names of CSV/TSV files that have no header row), ``validation_from_train``
  (true: validation is carved from train and a validation file, if any, is reported as test).

Splits follow the kit's roles (``lopt_core.data.task``): without a validation file, validation is carved from
train; without a test file, the validation file becomes test and validation is carved. Every error names
the field, or the file and line.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from lopt_core.data.formats import DataError, read_jsonl, template_fields
from lopt_core.data.task import ALIASES, SPLITS, Task
from lopt_core.utils import KitError

REQUIRED = {"name": str, "kind": str, "files": dict, "text_columns": list}
OPTIONAL = {"label_column": str, "label_words": dict, "target_column": str, "template": str, "columns": list,
            "validation_from_train": bool, "description": str}
READERS = (".csv", ".tsv", ".jsonl")


class TaskFileError(KitError, ValueError):
    """A task spec that cannot be used; the message names the field (or the file and line)."""


def load_task_file(path: str | Path) -> Task:
    """The task a spec file describes (JSON, or YAML when PyYAML is installed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    spec = _read_spec(path)
    _check_spec(spec, path)
    kind, columns = spec["kind"], spec["text_columns"]
    template = spec.get("template") or "\n".join(f"{c.replace('_', ' ').capitalize()}: {{{c}}}" for c in columns) \
        + ("\nAnswer:" if kind == "classification" else "\nOutput:")
    unknown = [f for f in template_fields(template) if f not in columns]
    if unknown:
        raise TaskFileError(f"{path}: 'template' reads {unknown}, which are not in 'text_columns' {columns}")
    words = spec.get("label_words", {})
    splits = {}
    for split, file in spec["files"].items():
        role = ALIASES.get(split, split)
        if role not in SPLITS:
            raise TaskFileError(f"{path}: 'files' has a split {split!r}; use train, validation (or dev) and test")
        if role in splits:
            raise TaskFileError(f"{path}: 'files' names the {role} split twice")
        records = _read_records(path.parent / file, spec.get("columns"), path)
        splits[role] = (_classification_rows if kind == "classification" else _generation_rows)(records, spec)
    if "train" not in splits:
        raise TaskFileError(f"{path}: 'files' has no train split")
    if spec.get("validation_from_train") and "validation" in splits:
        if "test" in splits:
            raise TaskFileError(f"{path}: 'validation_from_train' is true but 'files' lists both a validation and a "
                                "test file; drop one")
        splits["test"] = splits.pop("validation")
    task = Task(name=spec["name"], kind=kind, template=template, splits=splits,
                label_words=tuple(words.values()), label_names=tuple(str(k) for k in words),
                source=f"task file {path.resolve()}", description=spec.get("description", ""))
    return task.assign_roles()


def _read_spec(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TaskFileError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or write the spec as "
                                "JSON") from None
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise TaskFileError(f"{path}: not valid YAML: {err}") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as err:
            raise TaskFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(spec, dict):
        raise TaskFileError(f"{path}: the spec must be an object with fields {', '.join(REQUIRED)}, ...")
    return spec


def _check_spec(spec: dict, path: Path) -> None:
    for name in REQUIRED:
        if name not in spec:
            raise TaskFileError(f"{path}: missing field {name!r} (a spec needs {', '.join(REQUIRED)})")
    for name, value in spec.items():
        kind = REQUIRED.get(name) or OPTIONAL.get(name)
        if kind is None:
            raise TaskFileError(f"{path}: unknown field {name!r}; the fields are "
                                f"{', '.join([*REQUIRED, *OPTIONAL])}")
        if not isinstance(value, kind):
            raise TaskFileError(f"{path}: field {name!r} must be a {kind.__name__}, got {type(value).__name__}")
    if spec["kind"] not in ("classification", "generation"):
        raise TaskFileError(f"{path}: field 'kind' must be 'classification' or 'generation', got {spec['kind']!r}")
    if not spec["text_columns"] or not all(isinstance(c, str) for c in spec["text_columns"]):
        raise TaskFileError(f"{path}: field 'text_columns' must list one or more column names")
    need = ("label_column", "label_words") if spec["kind"] == "classification" else ("target_column",)
    for name in need:
        if name not in spec:
            raise TaskFileError(f"{path}: a {spec['kind']} task needs the field {name!r}")
    if spec["kind"] == "classification":
        words = spec["label_words"]
        if len(words) < 2 or not all(isinstance(w, str) and w.strip() for w in words.values()):
            raise TaskFileError(f"{path}: field 'label_words' must map two or more label values to non-empty "
                                "words, e.g. {\"0\": \" negative\", \"1\": \" positive\"}")
    for split, file in spec["files"].items():
        if not isinstance(file, str):
            raise TaskFileError(f"{path}: 'files' maps {split!r} to {file!r}; give a file path")
        if Path(file).suffix.lower() not in READERS:
            raise TaskFileError(f"{path}: 'files' {split!r}: {file} is not a CSV, TSV or JSONL file "
                                f"(by its extension: {', '.join(READERS)})")
        if not (path.parent / file).is_file():
            raise FileNotFoundError(f"{path}: 'files' {split!r}: {path.parent / file} does not exist")


def _read_records(file: Path, columns: list | None, spec_path: Path) -> list[tuple[str, dict]]:
    """("file:line", record) for every row of a CSV, TSV or JSONL file."""
    if file.suffix.lower() == ".jsonl":
        return [(f"{file}:{line}", record) for line, record in read_jsonl(file)]
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    with file.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = columns if columns is not None else next(reader, None)
        if not header:
            raise DataError(f"{file}:1: empty file; a header row names the columns (or give 'columns' in "
                            f"{spec_path.name})")
        records = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{file}:{reader.line_num}: {len(row)} fields, but there are {len(header)} columns "
                                f"({', '.join(header)})")
            records.append((f"{file}:{reader.line_num}", dict(zip(header, row, strict=True))))
    return records


def _field(record: dict, column: str, file_line: str) -> str:
    if column not in record:
        raise DataError(f"{file_line}: no column {column!r} (the row has: {', '.join(record)})")
    value = record[column]
    if value is None or not str(value).strip():
        raise DataError(f"{file_line}: empty text in column {column!r}")
    return str(value).strip()


def _classification_rows(records, spec: dict) -> list[dict]:
    words, column = spec["label_words"], spec["label_column"]
    classes = {str(k): i for i, k in enumerate(words)}
    rows = []
    for where, rec in records:
        label = _field(rec, column, where)
        if label not in classes:
            raise DataError(f"{where}: label {label!r} in column {column!r} is not in 'label_words' "
                            f"({', '.join(map(repr, classes))})")
        rows.append({**{c: _field(rec, c, where) for c in spec["text_columns"]}, "label": classes[label]})
    return rows


def _generation_rows(records, spec: dict) -> list[dict]:
    """One row per source (the text columns), with every target of that source as a reference."""
    grouped: dict[tuple, dict] = {}
    for where, rec in records:
        texts = {c: _field(rec, c, where) for c in spec["text_columns"]}
        target = _field(rec, spec["target_column"], where)
        grouped.setdefault(tuple(texts.values()), {**texts, "references": []})["references"].append(target)
    return list(grouped.values())
