"""The task registry: a name → a function that loads the task. ``load_task("sentiment")``.

Tasks register themselves with ``register_task`` (the kit's own in ``lopt_core.data.loaders``); a task of
your own files needs no registration: ``lopt_core.data.task_files.load_task_file``.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from lopt_core.data.task import Task

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
        splits: map split → file name inside ``path`` to override the defaults split by split, e.g.
            ``{"train": "devset.csv"}`` for E2E without its train file: the test file stays the default
            ``testset_w_refs.csv``, and as devset.csv is now train, validation is carved from its meaning
            representations (a file serves one split). ``dev`` means validation.
    """
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(list_tasks())}")
    if source not in ("auto", "files", "hf"):
        raise ValueError(f"source must be 'auto', 'files' or 'hf', not {source!r}")
    return _TASKS[name](path=path, source=source, splits=splits)
