"""Methods: one module per method behind one interface (``base``), and the registry that builds them.

``build_method("lopt2", backbone, prompt_len=20, rank=2)``.

Each method lives in its own module (or package) here and registers itself with ``@register``;
the modules are discovered here, so adding a method touches nothing central. ``base`` and any module whose
name starts with ``_`` are helpers, not methods.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import warnings
from pathlib import Path

from safetensors.torch import load_file, save_file

from lopt_core.methods.base import CachedPrompt, MethodConfig, PromptMethod
from lopt_core.model.backbone import Backbone
from lopt_core.utils import absent_values, atomic_path, read_json, write_json

_METHODS: dict[str, type[PromptMethod]] = {}


def register(name: str):
    """Class decorator: register a ``PromptMethod`` subclass under ``name``."""
    def wrap(cls: type[PromptMethod]) -> type[PromptMethod]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__name__}")
        cls.name = name
        _METHODS[name] = cls
        return cls
    return wrap


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[PromptMethod]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}")
    return _METHODS[name]


def readable(label) -> str:
    """``label`` with a registry key at its start put as the method's ``title`` ("lopt1 (r=2)" → "LoPT-1 (r=2)",
    "prompt_tuning" → "prompt tuning"): what a figure's legend shows. A key is only replaced whole (followed by the
    end, a space or punctuation other than ``_``); anything else comes back unchanged, as a string."""
    text = str(label)
    for key in sorted(_METHODS, key=len, reverse=True):
        rest = text[len(key):]
        if text.startswith(key) and (not rest or not (rest[0].isalnum() or rest[0] == "_")):
            return (_METHODS[key].title or key) + rest
    return text


def config_fields(name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(method_class(name).Config)]


def with_rank(name: str, options: dict, rank: int) -> dict:
    """``options`` with ``rank`` added when the method has a rank (LoPT, DePT), unchanged otherwise: how a sweep's
    point, whose ``rank`` is a column of every run (0 for methods without one), reaches the method it names."""
    return {**options, "rank": rank} if "rank" in config_fields(name) else dict(options)


def make_config(name: str, **options) -> MethodConfig:
    """The method's config dataclass; unknown options are refused with the valid ones listed."""
    allowed = config_fields(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"method {name!r} has no option {', '.join(map(repr, unknown))}; "
                        f"its options are: {', '.join(allowed)}")
    return method_class(name).Config(**options)


def saved_config(name: str, saved: dict) -> dict:
    """A method config as saved, completed for today's kit: a field the saved config lacks (the kit gained it
    later) takes the value the kit behaved as when it was saved (``option(..., absent=)``), not today's default."""
    then = absent_values(method_class(name).Config)
    return {**{k: v for k, v in then.items() if k not in saved}, **saved}


def build_method(name: str, backbone: Backbone, **options) -> PromptMethod:
    """Build a registered method for ``backbone`` with config options (validated)."""
    method = method_class(name)(make_config(name, **options), backbone)
    return method.to(backbone.device)


METHOD_JSON, METHOD_WEIGHTS = "method.json", "method.safetensors"


def save_method(method: PromptMethod, folder: str | Path, backbone_name: str | None = None) -> Path:
    """Write ``method.json`` (name + config) and ``method.safetensors`` (its state), atomically."""
    from lopt_core import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in method.state_dict().items()}
    with atomic_path(folder / METHOD_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "method": method.name})
    write_json(folder / METHOD_JSON, {"method": method.name, "config": method.config.to_dict(),
                                      "dims": method.dims, "backbone": backbone_name,
                                      "lopt_core": __version__})
    return folder


def load_method(folder: str | Path, backbone: Backbone) -> PromptMethod:
    """Rebuild a saved method on ``backbone`` and load its exact state."""
    folder = Path(folder)
    if not (folder / METHOD_JSON).is_file():
        raise FileNotFoundError(f"{folder} holds no saved method ({METHOD_JSON} missing)")
    meta = read_json(folder / METHOD_JSON)
    if meta["dims"]["hidden_size"] != backbone.hidden_size:
        raise ValueError(f"the method in {folder} was trained on a backbone with d="
                         f"{meta['dims']['hidden_size']} ({meta.get('backbone')}); this one has "
                         f"d={backbone.hidden_size} ({backbone.name})")
    if meta.get("backbone") and meta["backbone"] != backbone.name:
        warnings.warn(f"loading a method trained on {meta['backbone']} onto {backbone.name}", stacklevel=2)
    name = meta["method"]
    # initialise=False: no data-dependent start (the prefix text fit, IAPT's calibration) for a state that
    # load_state_dict overwrites below
    config = make_config(name, **saved_config(name, meta["config"]))  # as the kit built it then
    method = method_class(name)(config, backbone, initialise=False).to(backbone.device)
    state = load_file(str(folder / METHOD_WEIGHTS), device=str(backbone.device))
    method.load_state_dict(state, strict=True)
    return method


HELPERS = ("base",)  # modules of this package that hold shared machinery, not a method


def _discover() -> None:
    """Import every method module of this package, so that each registers itself."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in HELPERS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
__all__ = ["CachedPrompt", "MethodConfig", "PromptMethod", "register", "build_method", "list_methods", "method_class",
           "config_fields", "with_rank", "make_config", "saved_config", "save_method", "load_method"]
