"""Small shared helpers: seeding, device choice, atomic writes, run information."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class KitError(Exception):
    """An error the kit explains itself: the CLI prints its message alone and exits with status 2.
    Anything else keeps its traceback (a bug should be seen)."""


_UNSET = object()


def option(default: Any, help: str, absent: Any = _UNSET):
    """A config field with its help text, written once: ``--help`` of the CLI shows it.

    ``absent``: the value a config saved before this default took effect meant (a saved run that lacks the field
    was built when the kit behaved as ``absent``; ``saved_config`` fills it in), where that differs from ``default``."""
    metadata = {"help": help} if absent is _UNSET else {"help": help, "absent": absent}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def changed_defaults(config_class) -> dict[str, Any]:
    """The fields of a config dataclass whose default changed after the field was added (``option(absent=)``), each
    at the value it had before: what a config saved without the field behaved as."""
    return {f.name: f.metadata["absent"] for f in dataclasses.fields(config_class) if "absent" in f.metadata}


def absent_values(config_class) -> dict[str, Any]:
    """The value each field of a config dataclass has in a config saved without it: its ``absent`` value where the
    default changed since the field was added (``changed_defaults``), else its default (fields without a default
    are left out)."""
    out = changed_defaults(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in out:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) with one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's CPU RNG seeded to `seed`, leaving the global RNG as it was.

    Modules built inside start from `seed` alone, whatever ran before, and building them does not
    shift the random stream of the caller (data shuffling, dropout, other methods)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class DeviceUnavailable(KitError, RuntimeError):
    """A device was asked for that this machine does not have."""


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to cuda → mps → cpu; refuse a device this machine does not have."""
    if isinstance(device, torch.device):
        device = str(device)
    local_rank = os.environ.get("LOCAL_RANK")  # set by accelerate launch / torchrun: one GPU per process
    if device in ("auto", "cuda") and local_rank is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(local_rank)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"device={device!r} was asked for but CUDA is not available on this machine "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}). "
            "Use device='auto' or device='cpu'."
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceUnavailable(f"device={device!r} was asked for but MPS is not available. Use device='auto'.")
    if kind not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    return torch.device(device)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or an exception leaves the old file (or nothing) in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, strict JSON (NaN and infinities become null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(obj), indent=2, allow_nan=False, default=_json_default) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    return obj


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (a quick TCP check, no retries).

    Without it an offline machine spends about 45 s in retries before the hub client gives up.
    """
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_offline_mode() -> bool:
    try:
        from huggingface_hub import is_offline_mode
    except ImportError:
        return False
    return bool(is_offline_mode())


def git_sha(cwd: str | os.PathLike | None = None) -> str | None:
    """The current commit of the repository holding ``cwd`` (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    """Versions of the packages that decide numerical results."""
    import importlib.metadata as md

    names = ["torch", "transformers", "safetensors", "gguf", "peft", "numpy", "pandas", "papermill"]
    found = {"python": platform.python_version(), "lopt_core": _own_version()}
    for name in names:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return found


def _own_version() -> str:
    from lopt_core import __version__

    return __version__


def run_info(seed: int | None = None, device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, machine, device, git sha and seed: written next to every run's results."""
    dev = torch.device(device) if device is not None else None
    info: dict[str, Any] = {
        "versions": versions(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(dev) if dev is not None else None,
        "git_sha": git_sha(),
        "seed": seed,
    }
    if dev is not None and dev.type == "cuda":
        info["cuda_device_name"] = torch.cuda.get_device_name(dev)
    return info
