"""Where the benchmarks read and write: one JSON per benchmark under ``benchmarks/results/``, long runs beside the
clone (``../runs``), real data sets beside it (``../shared/data``)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lopt_core.utils import run_info, write_json

BENCHMARKS = Path(__file__).resolve().parents[1]
RESULTS = BENCHMARKS / "results"
RUNS = BENCHMARKS.parents[1] / "runs"  # long runs live outside the clone
SHARED_DATA = BENCHMARKS.parents[1] / "shared" / "data"
TASK_TITLES = {"yesno": "yes/no", "sst2": "SST-2"}  # the benchmarks' tasks as tables and sentences name them


def data_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--data``: the folder of the real data set ``name``, by default ``../shared/data/NAME`` beside the clone."""
    parser.add_argument("--data", default=str(SHARED_DATA / name))


def save(name: str, payload: dict, device=None) -> Path:
    """Write ``results/NAME.json``: the payload after the benchmark's name, date, run info and thread count."""
    path = RESULTS / f"{name}.json"
    write_json(path, {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "run_info": run_info(None, device), "threads": torch.get_num_threads(), **payload})
    return path


def load(name: str) -> dict | None:
    """``results/NAME.json``, or None when that benchmark has not been run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
