"""Execute the lesson notebooks with papermill: each run gets its own output folder holding the
executed notebook, its figures (PNG) and its ``metrics.json``."""
from __future__ import annotations

import os
import time
from pathlib import Path

from lopt_core.lab.records import RESULTS, ROOT

NOTEBOOK_DIR = ROOT / "notebooks"


def all_notebooks() -> list[Path]:
    """Every committed notebook, lessons and workers."""
    return sorted(NOTEBOOK_DIR.rglob("*.ipynb"))


def list_notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (``00_…``), optionally only those whose name starts with ``only``."""
    books = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [p for p in books if any(p.name.startswith(o) for o in only)]
        if not books:
            raise FileNotFoundError(f"no notebook in {NOTEBOOK_DIR} starts with {only}")
    return books


RUNTIMES = RESULTS / "notebook_times.json"  # python benchmarks/notebook_series.py
PROFILE_ORDER = ("demo", "ci", "cpu", "gpu")  # how a lesson's Runtime line lists them


def matmul_gflops(size: int = 512, seconds: float = 0.5) -> float:
    """This machine's fp32 matrix-multiply speed in GFLOP/s (torch's threads): a lesson's time on CPU scales about
    inversely with it, so a Runtime line measured elsewhere can be read for this machine."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        done += 1
    return 2 * size ** 3 * done / elapsed / 1e9


def read_runtimes(path: str | Path = RUNTIMES) -> list[dict]:
    """The measured lesson times: one record per (lesson, profile) run, oldest first."""
    import json

    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8"))["runs"] if path.is_file() else []


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def newest_runtimes(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """profile → lesson → its newest measured run (by date; the later in the record on the same date)."""
    newest: dict[str, dict[str, dict]] = {}
    for r in runs:
        mine = newest.setdefault(r["profile"], {})
        if r["date"] >= mine.get(r["notebook"], {}).get("date", ""):
            mine[r["notebook"]] = r
    return newest


def runtime_line(stem: str, runs: list[dict]) -> str:
    """A lesson's **Runtime** line, written from the measurements ``runs`` (the newest per profile): each profile's
    time with its date and the machine's matmul speed, and the profiles not measured."""
    newest = {p: lessons[stem] for p, lessons in newest_runtimes(runs).items() if stem in lessons}
    measured = [f"`{p}` {_duration(r['seconds'])} ({r['date']}, {r['threads']} threads"
                + (f", {r['matmul_gflops']:.0f} GFLOP/s)" if r.get("matmul_gflops") else ", speed not recorded)")
                for p, r in ((p, newest[p]) for p in PROFILE_ORDER if p in newest)]
    missing = [f"`{p}`" for p in PROFILE_ORDER[:3] if p not in newest]
    text = "; ".join(measured) if measured else "nothing measured yet"
    return (f"**Runtime**, measured: {text}" + (f"; not measured: {', '.join(missing)}" if missing else "")
            + ". Times scale about inversely with a machine's fp32 matmul speed (`lopt-kit info` prints yours).")


def write_runtime_lines(runs: list[dict] | None = None, paths: list[Path] | None = None) -> list[str]:
    """Rewrite the **Runtime** line of each lesson's first cell from the measurements; return the lessons changed.
    Only that line changes (the notebook's JSON layout stays as it is); the new file replaces the old at once."""
    import json

    from lopt_core.utils import atomic_path

    runs = read_runtimes() if runs is None else runs
    changed = []
    for path in list_notebooks() if paths is None else paths:
        raw = path.read_text(encoding="utf-8")
        lines = json.loads(raw)["cells"][0]["source"]
        lines = lines if isinstance(lines, list) else lines.splitlines(True)
        old = [line for line in lines if line.startswith("**Runtime**")]
        if len(old) != 1:
            raise ValueError(f"{path.name}: its first cell needs exactly one line that starts with **Runtime**")
        new = runtime_line(path.stem, runs) + ("\n" if old[0].endswith("\n") else "")
        if new == old[0]:
            continue
        before, after = (json.dumps(s, ensure_ascii=False)[1:-1] for s in (old[0], new))
        if before not in raw:
            raise ValueError(f"{path.name}: its Runtime line is not written as this function writes JSON strings")
        text = raw.replace(before, after, 1)
        json.loads(text)  # still a notebook
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        changed.append(path.stem)
    return changed


CI_CELL_TIMEOUT = 1800  # seconds; under profile ci every cell takes well under a minute


def cell_timeout(profile: str, timeout: int | None | str = "auto") -> int | None:
    """Seconds one cell may run: ``timeout`` itself unless it is ``"auto"``, which means 30 min under
    ``ci`` (a hung cell fails the run instead of blocking it) and no limit under ``cpu``/``gpu``, whose
    training cells legitimately run for tens of minutes (notebook 02 trains 9 runs in one cell)."""
    if timeout != "auto":
        return timeout
    return CI_CELL_TIMEOUT if profile == "ci" else None


def out_dir_parameter(out_dir: Path, notebook: Path) -> str:
    """``out_dir`` as the notebook reads it (its folder is the working directory): relative where it lies in the
    notebook's repository, e.g. ``../outputs/01_…`` (an executed copy, or the book, shows no path of the machine
    that ran it), absolute elsewhere."""
    repository = notebook.parent.parent
    return os.path.relpath(out_dir, notebook.parent) if out_dir.is_relative_to(repository) else str(out_dir)


def execute_notebook(path: str | Path, out_root: str | Path, profile: str = "ci",
                     parameters: dict | None = None, timeout: int | None | str = "auto", progress: bool = False,
                     run_name: str | None = None) -> dict:
    """Run one notebook top to bottom in a fresh kernel; return where it wrote and how long it took.

    The notebook gets ``profile`` and ``out_dir`` (= ``out_root/<run_name or notebook name>``) as
    parameters, plus any ``parameters`` given; the executed copy is saved in ``out_dir`` too.
    ``timeout`` limits each cell (see ``cell_timeout``; None: no limit).
    """
    import papermill as pm

    path = Path(path).resolve()
    out_dir = Path(out_root).resolve() / (run_name or path.stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "out_dir": out_dir_parameter(out_dir, path), **(parameters or {})}
    start = time.perf_counter()
    # the kernel draws inline, as in JupyterLab, whatever MPLBACKEND says: the copy keeps its figures
    pm.execute_notebook(str(path), str(out_dir / path.name), parameters=params, cwd=str(path.parent),
                        kernel_name="python3", progress_bar=progress, execution_timeout=cell_timeout(profile, timeout),
                        report_mode=False, extra_arguments=["--matplotlib=inline"])
    return {"notebook": path.name, "out_dir": str(out_dir), "seconds": time.perf_counter() - start}


def run_code(path: str | Path, out_root: str | Path, profile: str = "ci", parameters: dict | None = None,
             run_name: str | None = None, tags: set[str] | None = None) -> dict:
    """Run a notebook's code cells in this process, without Jupyter: for machines that have no kernel or
    papermill (a lent GPU machine, a bare cluster node). The parameters cell runs, then ``profile``,
    ``out_dir`` and ``parameters`` are set as papermill would set them, then the other cells, with the
    notebook's folder as working directory. ``display`` prints. Returns where it wrote and how long it took.
    With ``tags``, only the parameters cell and the cells carrying one of ``tags`` run. A failing cell raises
    with the notebook and cell index in its traceback.
    """
    import json

    path = Path(path).resolve()
    out_dir = Path(out_root).resolve() / (run_name or path.stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    given = {"profile": profile, "out_dir": out_dir_parameter(out_dir, path), **(parameters or {})}
    namespace: dict = {"__name__": "__main__", "display": print}
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    here, start = os.getcwd(), time.perf_counter()
    os.chdir(path.parent)
    try:
        for i, cell in enumerate(cells):
            cell_tags = set(cell.get("metadata", {}).get("tags", []))
            if tags is not None and not cell_tags & (tags | {"parameters"}):
                continue
            source = "".join(cell["source"])
            exec(compile(source, f"{path.name}[code cell {i}]", "exec"), namespace)
            if "parameters" in cell_tags:
                namespace.update(given)
    finally:
        os.chdir(here)
    return {"notebook": path.name, "out_dir": str(out_dir), "seconds": time.perf_counter() - start}


def run_solutions(path: str | Path, out_root: str | Path, profile: str = "ci", parameters: dict | None = None) -> dict:
    """Run a lesson's exercise solutions: its cells tagged ``setup`` (what the solutions build on: imports,
    profile, backbone, task, in 07 the trained runs) and ``solution``, with ``solutions = True``. A normal run
    skips the solutions: each starts with ``if solutions:``, and the parameters cell sets ``solutions = False``."""
    return run_code(path, out_root, profile, {"solutions": True, **(parameters or {})},
                    run_name=f"{Path(path).stem}-solutions", tags={"setup", "solution"})


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs, execution counts and run metadata from a notebook; True if it changed."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after)
    return after != before


def is_stripped(path: str | Path) -> bool:
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    return all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code") and "papermill" not in nb.metadata


def run_series(out_root: str | Path, profile: str = "ci", only: list[str] | None = None,
               timeout: int | None | str = "auto") -> list[dict]:
    """Execute the numbered notebooks in order; print each one's wall time; stop at the first failure."""
    results = []
    for path in list_notebooks(only):
        print(f"running {path.name} (profile {profile}) ...", flush=True)
        info = execute_notebook(path, out_root, profile, timeout=timeout, progress=True)
        print(f"  done in {info['seconds']:.0f} s → {info['out_dir']}", flush=True)
        results.append(info)
    total = sum(r["seconds"] for r in results)
    print(f"{len(results)} notebooks in {total:.0f} s; outputs in {Path(out_root).resolve()}")
    return results


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if args[:1] == ["--strip"]:
        for name in args[1:]:
            print(("stripped " if strip_outputs(name) else "clean    ") + name)
