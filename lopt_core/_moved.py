"""Old module paths (before the layered subpackages of 0.2) keep importing for one release, with a
``DeprecationWarning`` that names the new place. Run folders need none of this: checkpoints hold only
tensors and plain data, and ``method.json`` stores a registry name, never a module path."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module → the module(s) its public names now live in
MOVED: dict[str, tuple[str, ...]] = {
    "lopt_core.backbone": ("lopt_core.model.backbone", "lopt_core.model.embedded", "lopt_core.model.tiny"),
    "lopt_core.kv": ("lopt_core.model.kv",),
    "lopt_core.batching": ("lopt_core.data.batching",),
    "lopt_core.sampler": ("lopt_core.data.sampler",),
    "lopt_core.tasks": ("lopt_core.data.task", "lopt_core.data.registry", "lopt_core.data.loaders",
                        "lopt_core.data.task_files"),
    "lopt_core.task_files": ("lopt_core.data.task_files",),
    "lopt_core.formats": ("lopt_core.data.formats", "lopt_core.data.hub"),
    "lopt_core.data.tasks": ("lopt_core.data.task", "lopt_core.data.registry", "lopt_core.data.loaders",
                             "lopt_core.data.task_files"),
    "lopt_core.scoring": ("lopt_core.evaluation.scoring",),
    "lopt_core.generation": ("lopt_core.evaluation.decoding", "lopt_core.evaluation.evaluator"),
    "lopt_core.metrics": ("lopt_core.evaluation.metrics",),
    "lopt_core.stats": ("lopt_core.evaluation.stats",),
    "lopt_core.plots": ("lopt_core.evaluation.plots",),
    "lopt_core.parallel": ("lopt_core.training.accelerate",),
    "lopt_core.train": ("lopt_core.training.trainer", "lopt_core.training.config", "lopt_core.training.runs"),
    "lopt_core.runs": ("lopt_core.training.runs",),
    "lopt_core.interop": ("lopt_core.serving.interop",),
    "lopt_core.analysis": ("lopt_core.lab.analysis",),
    "lopt_core.widgets": ("lopt_core.lab.widgets",),
    "lopt_core.sweep": ("lopt_core.lab.sweep",),
    "lopt_core.profiles": ("lopt_core.lab.profiles",),
    "lopt_core.notebooks": ("lopt_core.lab.notebooks",),
    "lopt_core.methods.rational": ("lopt_core.methods.iapt.rational",),
}


class _Moved(types.ModuleType):
    """Stands for an old module: each name is looked up in the modules it moved to."""

    def __getattr__(self, name: str):
        for target in MOVED[self.__name__]:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(MOVED[self.__name__])}) has no "
                             f"attribute {name!r}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return _Moved(spec.name)

    def exec_module(self, module):
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} moved to {' and '.join(new)}; import from there or from lopt_core "
                      "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def module_attribute(name: str):
    """``lopt_core.<old name>`` as an attribute: the moved module (with its warning); else AttributeError."""
    if f"lopt_core.{name}" in MOVED:
        return importlib.import_module(f"lopt_core.{name}")
    raise AttributeError(f"module 'lopt_core' has no attribute {name!r}")
