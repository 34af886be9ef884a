"""lopt_core: the library behind the LoPT prompt-tuning kit's notebooks and CLI.

The front door: everything a notebook, a script or the README needs, by name. Names load on first use,
so ``import lopt_core`` stays fast (the CLI starts without torch until it needs it). The layers, from the
bottom up (each imports only from those below it): ``data``, ``model``, ``methods``, ``evaluation``,
``training``, ``serving``, ``lab``, then ``cli``.

    >>> from lopt_core import load_backbone, load_task, build_method, Trainer, TrainConfig
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name → the module that defines it (the one place to look it up)
_API = {
    # data
    "load_task": "lopt_core.data.registry", "load_task_file": "lopt_core.data.task_files",
    "list_tasks": "lopt_core.data.registry", "register_task": "lopt_core.data.registry", "Task": "lopt_core.data.task",
    "DataError": "lopt_core.data.formats",
    # model
    "load_backbone": "lopt_core.model.backbone", "Backbone": "lopt_core.model.backbone",
    "TINY_SPECS": "lopt_core.model.tiny",
    # methods
    "build_method": "lopt_core.methods", "list_methods": "lopt_core.methods", "method_class": "lopt_core.methods",
    "config_fields": "lopt_core.methods", "with_rank": "lopt_core.methods", "save_method": "lopt_core.methods",
    "load_method": "lopt_core.methods",
    "PromptMethod": "lopt_core.methods", "readable": "lopt_core.methods",
    # evaluation
    "evaluate": "lopt_core.evaluation.evaluator", "evaluate_generation": "lopt_core.evaluation.evaluator",
    "to_device": "lopt_core.evaluation.evaluator", "generate": "lopt_core.evaluation.decoding",
    "class_scores": "lopt_core.evaluation.scoring",
    # training
    "Trainer": "lopt_core.training.trainer", "TrainConfig": "lopt_core.training.config",
    "TrainingDiverged": "lopt_core.training.trainer", "load_run": "lopt_core.training.runs",
    # serving
    "Server": "lopt_core.serving.server", "to_peft": "lopt_core.serving.interop",
    "from_peft": "lopt_core.serving.interop",
    # lab
    "get_profile": "lopt_core.lab.profiles", "run_sweep": "lopt_core.lab.sweep", "kit_record": "lopt_core.lab.records",
    "seed_values": "lopt_core.lab.records",
    # utilities
    "seed_everything": "lopt_core.utils", "write_json": "lopt_core.utils", "read_json": "lopt_core.utils",
}
# modules offered whole: `from lopt_core import plots, stats, analysis`
_MODULES = {"plots": "lopt_core.evaluation.plots", "stats": "lopt_core.evaluation.stats",
            "analysis": "lopt_core.lab.analysis", "widgets": "lopt_core.lab.widgets"}

__all__ = ["__version__", *_API, *_MODULES]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        return importlib.import_module("lopt_core._moved").module_attribute(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


importlib.import_module("lopt_core._moved").install()  # old module paths: a DeprecationWarning, then the new one
