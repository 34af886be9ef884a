"""Papermill sweeps: one executed copy of a notebook per parameter set, gathered into one table.

Each run gets its own folder (``out/<key>/``) holding the executed notebook, its figures and its
``metrics.json``, plus ``status.json`` (parameters, ok/failed, error, wall time). A failed run is
recorded and the sweep goes on; running the sweep again skips the runs that finished. Results go
to ``out/results.csv`` (one row per run: parameters, metrics, status, wall time).

Runs go to a local pool of ``jobs`` kernels by default, or to a Dask cluster (``scheduler``: the
address of a running scheduler, e.g. one that dask-jobqueue started on Slurm, or ``"local"`` for a
``LocalCluster`` of ``jobs`` workers). Cluster workers need the kit installed but not this machine's
disk: each task runs the notebook in a temporary folder and returns its status and files, which the
client writes into ``out``.
"""
from __future__ import annotations

import itertools
import json
import re
import socket
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from lopt_core.lab.notebooks import execute_notebook
from lopt_core.utils import atomic_path, read_json, write_json


def grid(params: dict[str, list] | list[dict], seeds: list[int] | None = None) -> list[dict]:
    """Every combination of the parameter lists, or the given list of points, times the seeds."""
    if isinstance(params, dict):
        names = list(params)
        points = [dict(zip(names, values, strict=True)) for values in itertools.product(*(params[n] for n in names))]
    else:
        points = [dict(p) for p in params]
    return [{**p, "seed": s} for p in points for s in seeds] if seeds else points


def run_key(point: dict) -> str:
    """A folder name for a parameter set: ``method=lopt1_rank=2_options=reparam-False`` (paths by their last
    part; no braces, quotes or slashes, which papermill would read as path templates)."""
    return "_".join(f"{k}={_slug(v)}" for k, v in point.items())


def _slug(value) -> str:
    if isinstance(value, dict):
        return "+".join(f"{k}-{_slug(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value) or "none"
    text = str(value)
    if "/" in text:
        text = Path(text).name
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text)


def flatten(metrics: dict, prefix: str = "") -> dict:
    """Nested metrics → one level with dotted keys; lists are left out of the table."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif not isinstance(value, list):
            flat[name] = value
    return flat


def _finished(folder: Path) -> dict | None:
    status_path = folder / "status.json"
    if status_path.is_file():
        status = read_json(status_path)
        if status["status"] == "ok" and (folder / "metrics.json").is_file():
            return status
    return None


def execute_point(notebook: Path, folder: Path, point: dict, profile: str, fixed: dict,
                  timeout: int | None | str) -> dict:
    """Run ``notebook`` for one parameter set with ``folder`` as its ``out_dir``; its status (never raises)."""
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    status = {"params": point, "status": "ok", "error": None}
    try:
        execute_notebook(notebook, folder.parent, profile, {**fixed, **point, "out_dir": str(folder)}, timeout=timeout,
                         run_name=folder.name)
        if not (folder / "metrics.json").is_file():
            raise RuntimeError(f"{notebook.name} finished but wrote no metrics.json in its out_dir")
    except Exception as err:  # a failed run is recorded, not fatal
        status.update(status="failed", error=f"{type(err).__name__}: {_last_line(err)}",
                      traceback=traceback.format_exc(limit=3))
    status["wall_seconds"] = time.perf_counter() - start
    return status


def _run_one(notebook: Path, out: Path, point: dict, profile: str, fixed: dict, timeout: int | None | str) -> dict:
    folder = out / run_key(point)
    if (done := _finished(folder)) is not None:
        return {**done, "skipped": True}
    status = execute_point(notebook, folder, point, profile, fixed, timeout)
    write_json(folder / "status.json", status)
    return {**status, "skipped": False}


KEPT_BYTES = 50 * 2**20  # files a cluster task sends back: everything but checkpoints and files above this


def _remote(name: str, text: str, key: str, point: dict, profile: str, fixed: dict, timeout) -> dict:
    """A cluster task: run the notebook in a temporary folder, return the status and the files it wrote."""
    with tempfile.TemporaryDirectory(prefix="lopt-sweep-") as tmp:
        notebook = Path(tmp) / name
        notebook.write_text(text)
        folder = Path(tmp) / "out" / key
        status = execute_point(notebook, folder, point, profile, fixed, timeout)
        status["host"] = socket.gethostname()
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
                 if p.is_file() and p.name != "checkpoint.pt" and p.stat().st_size <= KEPT_BYTES}
    return {"status": status, "files": files}


def _write_back(folder: Path, result: dict) -> dict:
    for rel, data in result["files"].items():
        with atomic_path(folder / rel) as tmp:
            tmp.write_bytes(data)
    write_json(folder / "status.json", result["status"])  # last: a folder with status.json is complete
    return result["status"]


def _on_cluster(scheduler: str, jobs: int, notebook: Path, out: Path, points: list[dict], profile: str, fixed: dict,
                timeout, report) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:
        raise ImportError("sweeps on a cluster need Dask's distributed package: pip install distributed") from err
    cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True, dashboard_address=None) \
        if scheduler == "local" else None
    client = Client(cluster if cluster is not None else scheduler)
    try:
        text, futures = notebook.read_text(), {}
        for point in points:
            folder = out / run_key(point)
            if (done := _finished(folder)) is not None:
                report(point, {**done, "skipped": True})
                continue
            future = client.submit(_remote, notebook.name, text, folder.name, point, profile, fixed, timeout,
                                   pure=False, key=f"lopt-sweep-{folder.name}-{time.time_ns()}")
            futures[future] = (point, folder)
        for future in as_completed(futures):
            point, folder = futures[future]
            try:
                status = _write_back(folder, future.result())
            except Exception as err:  # the task itself died (a lost worker, a cancelled job): record it
                status = {"params": point, "status": "failed", "error": f"{type(err).__name__}: {_last_line(err)}",
                          "wall_seconds": None}
                write_json(folder / "status.json", status)
            report(point, {**status, "skipped": False})
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _last_line(err: Exception) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else repr(err)


def run_sweep(notebook: str | Path, params: dict[str, list] | list[dict], out: str | Path,
              seeds: list[int] | None = None,
              profile: str = "ci", jobs: int = 1, fixed: dict | None = None, timeout: int | None | str = "auto",
              progress: bool = True, scheduler: str | None = None) -> pd.DataFrame:
    """Execute ``notebook`` once per point of the grid and return the gathered results.

    Args:
        params: parameter name → values, e.g. ``{"rank": [1, 2, 4], "prompt_len": [10, 20]}`` (the
            full grid), or an explicit list of parameter dicts when not every combination makes sense.
        seeds: added as a ``seed`` parameter.
        jobs: runs at once (each is its own kernel process); with ``scheduler="local"``, the cluster's workers.
        fixed: parameters passed unchanged to every run.
        timeout: seconds one cell may run (``"auto"``: 30 min under ``ci``, no limit otherwise).
        scheduler: ``None`` (a local pool), ``"local"`` (a Dask ``LocalCluster``) or the address of a Dask
            scheduler (``"tcp://host:8786"``): each run becomes one task there.
    """
    notebook, out = Path(notebook).resolve(), Path(out).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    points = grid(params, seeds)
    if not points:
        raise ValueError("the sweep grid is empty: give at least one value per parameter")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def report(point, result):
        if progress:
            state = "skipped (done)" if result["skipped"] else result["status"]
            print(f"[{run_key(point)}] {state} in {result.get('wall_seconds') or 0:.0f} s"
                  + (f": {result['error']}" if result["status"] == "failed" else ""), flush=True)
        return result

    if scheduler is not None:
        _on_cluster(scheduler, jobs, notebook, out, points, profile, fixed or {}, timeout, report)
    else:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(lambda p: report(p, _run_one(notebook, out, p, profile, fixed or {}, timeout)), points))
    table = gather(out, points)
    if progress:
        failed = int((table["status"] != "ok").sum())
        print(f"{len(points)} runs ({failed} failed) in {time.perf_counter() - started:.0f} s → {out / 'results.csv'}")
    return table


def gather(out: str | Path, points: list[dict] | None = None) -> pd.DataFrame:
    """One row per run folder under ``out``: parameters, flattened metrics, status, wall time."""
    out = Path(out)
    rows = []
    folders = [out / run_key(p) for p in points] if points is not None else sorted(out.glob("*/status.json"))
    for folder in folders:
        folder = folder.parent if folder.name == "status.json" else folder
        status = read_json(folder / "status.json")
        row = {**status["params"], "status": status["status"], "error": status.get("error"),
               "wall_seconds": status.get("wall_seconds")}
        if status["status"] == "ok" and (folder / "metrics.json").is_file():
            metrics = json.loads((folder / "metrics.json").read_text())
            row.update({k: v for k, v in flatten(metrics).items() if k not in row})
        rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def parse_values(values: list[str]) -> list:
    """CLI values → Python literals where they parse (``"2"`` → 2, ``"0.1"`` → 0.1), else strings."""
    import ast

    parsed = []
    for v in values:
        try:
            parsed.append(ast.literal_eval(v))
        except (ValueError, SyntaxError):
            parsed.append(v)
    return parsed
