"""Side-by-side timing in one process: the flags every timing script shares, the embedded backbone they time,
contestants timed in alternating rounds, the machine's matmul peak, and peak memory (sampled during a step; a
fresh child process per contestant)."""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from lopt_core.model import Backbone, load_backbone


def timing_parser(doc: str, rounds: int, batch: bool = False) -> argparse.ArgumentParser:
    """A timing script's parser (described by its docstring's first line) with the shared flags: ``--rounds``
    (default ``rounds``) and, with ``batch``, the training step's batch (``--batch 8 --length 64 --virtual 20``)."""
    out = argparse.ArgumentParser(description=doc.split("\n")[0])
    out.add_argument("--rounds", type=int, default=rounds)
    if batch:
        out.add_argument("--batch", type=int, default=8)
        out.add_argument("--length", type=int, default=64)
        out.add_argument("--virtual", type=int, default=20)
    return out


def embedded_backbone() -> Backbone:
    """The frozen embedded backbone on CPU, as every timing script measures it (warnings silenced: PEFT and
    transformers warn on every wrapper the contestants build)."""
    warnings.filterwarnings("ignore")
    return load_backbone("embedded", device="cpu")


def side_by_side(steps: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1) -> dict[str, dict]:
    """Time each callable ``rounds`` times, interleaved (A B C A B C …) after ``warmup`` calls each, so that
    machine noise hits every contestant alike. Per contestant: the median, min and max seconds per call, and
    every call's seconds (``runs``)."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: summary(runs) for name, runs in times.items()}


def summary(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": times}


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    """Measured dense matmul throughput (GFLOP/s) on this device: the hardware reference."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


# ------------------------------------------------------------------------------------------------ memory
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_memory_mb(step: Callable[[], object], calls: int = 3, every: float = 0.002) -> dict:
    """Resident memory during ``calls`` calls of ``step``, sampled every ``every`` s by a thread:
    the peak above the memory held before the first call (what the step itself allocates), and the
    process's resident size at that peak. (The process-wide ru_maxrss is set by model loading.)"""
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
