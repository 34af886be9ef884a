"""Shared helpers for the benchmarks: side-by-side timing in one process, peak memory in child
processes, fixed batches, and result files (one JSON per benchmark under benchmarks/results/)."""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lopt_core.utils import run_info, write_json

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def alternate(steps: dict[str, Callable[[], None]], rounds: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Time each callable ``rounds`` times, interleaved (A B C A B C …) after ``warmup`` calls each,
    so that machine noise hits every contestant alike. Returns seconds per call."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_memory_mb(step: Callable[[], None], calls: int = 3, every: float = 0.002) -> dict:
    """Resident memory during ``calls`` calls of ``step``, sampled every ``every`` s by a thread:
    the peak above the memory held before the first call (what the step itself allocates), and the
    process's resident size at that peak. (The process-wide ru_maxrss is set by model loading.)"""
    import threading

    import psutil

    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        for _ in range(calls):
            step()
    finally:
        done.set()
        thread.join()
    return {"step_peak_mb": (peak[0] - before) / 2**20, "resident_at_peak_mb": peak[0] / 2**20}


def child_peak_memory(script: Path, name: str, extra: list[str] | None = None) -> dict:
    """Run ``script --memory-child NAME`` in a fresh process; it prints a JSON line with its peak RSS."""
    done = subprocess.run([sys.executable, str(script), "--memory-child", name, *(extra or [])],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def word_batch(backbone, batch_size: int, length: int, seed: int = 0) -> torch.Tensor:
    """(B, T) ids of common word tokens: a fixed, padding-free batch of realistic tokens."""
    from lopt_core.methods.base import vocab_token_ids

    pool = torch.tensor(vocab_token_ids(backbone, 2000, seed))
    g = torch.Generator().manual_seed(seed)
    return pool[torch.randint(len(pool), (batch_size, length), generator=g)]


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    """Measured dense matmul throughput (GFLOP/s) on this device: the hardware reference."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def save(name: str, payload: dict, device=None) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "run_info": run_info(None, device), "threads": torch.get_num_threads(), **payload})
    return path


# ------------------------------------------------------------------------------ quality reports as sweeps
WORKER = HERE.parent / "notebooks" / "workers" / "train_one.ipynb"
RUNS = HERE.parent.parent / "runs"  # long runs live outside the clone


def sweep(points: list[dict], out: Path, **fixed):
    """Every point through the worker notebook (profile ``cpu``), finished runs skipped; the finished rows.
    A failed run stops the report (after the others ran): a table with holes is not a result."""
    from lopt_core.lab.sweep import run_sweep

    table = run_sweep(WORKER, points, out, profile="cpu", fixed=fixed)
    failed = table[table["status"] != "ok"]
    if len(failed):
        raise RuntimeError(f"{len(failed)} runs failed (their status.json under {out} says why); re-run to retry "
                           "them:\n"
                           + failed[["error"]].to_string())
    return table


def restore_runs(out: Path, record: Path) -> int:
    """Write the runs recorded in ``record`` back into ``out`` as finished run folders (metrics and status), so
    that a sweep into ``out`` skips them: a long sweep resumes on any machine from its committed record."""
    from lopt_core.utils import read_json

    if not record.is_file():
        return 0
    restored = 0
    for run in read_json(record)["runs"]:
        folder = out / run["key"]
        if not (folder / "status.json").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "metrics.json", run["metrics"])
            write_json(folder / "status.json", run["status"])
            restored += 1
    return restored


def record_runs(out: Path, record: Path, about: str) -> int:
    """Record every finished run of ``out`` (with those recorded before) in ``record``: parameters and metrics, a
    few hundred bytes each, committed beside the results."""
    from lopt_core.utils import read_json

    runs = {run["key"]: run for run in (read_json(record)["runs"] if record.is_file() else [])}
    for status_path in sorted(out.glob("*/status.json")):
        status = read_json(status_path)
        if status["status"] == "ok" and (status_path.parent / "metrics.json").is_file():
            runs[status_path.parent.name] = {"key": status_path.parent.name, "status": status,
                                             "metrics": read_json(status_path.parent / "metrics.json")}
    write_json(record, {"about": about, "runs": sorted(runs.values(), key=lambda r: r["key"])})
    return len(runs)


def intervals(table, by: list[str], value: str) -> list[dict]:
    """Per group of ``by``: mean, 95% interval and the seeds' values of ``value``."""
    from lopt_core.evaluation.stats import mean_ci

    out = []
    for key, part in table.groupby(by, sort=False):
        ci = mean_ci(part[value].tolist())
        keys = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(by, keys)), "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
                    "values": dict(zip(part["seed"].tolist(), part[value].tolist()))})
    return out
