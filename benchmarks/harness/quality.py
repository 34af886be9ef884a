"""Resumable quality runs. Each point of a report is one run of the worker notebook (profile ``cpu``) in its own
folder under ``out``; finished runs are skipped. A report of hours resumes on any machine through its committed
record (``results/NAME_runs.json``: every finished run's parameters and metrics, a few hundred bytes each):

    sweep = Sweep(out, RECORD, ABOUT)
    sweep.restore()                    # the recorded runs, written back as finished run folders
    table = sweep.run(points)          # what is missing; every finished run recorded, even if one fails
    rows = intervals(table, ["method"], "test_accuracy")   # mean and 95% interval over seeds
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lopt_core import utils
from lopt_core.evaluation import stats
from lopt_core.lab.sweep import gather, run_key, run_sweep
from lopt_core.methods import method_class
from lopt_core.utils import read_json, write_json

from harness.results import BENCHMARKS, RESULTS

WORKER = BENCHMARKS.parent / "notebooks" / "workers" / "train_one.ipynb"
DIVERGED = "TrainingDiverged"  # the trainer's error when the loss becomes NaN or infinite


def diverged(status: dict) -> bool:
    """Did this run diverge? A divergence is a result of its rate (too large), not a failure to retry."""
    error = status.get("error")  # a table row's may be NaN
    return status.get("status") == "failed" and isinstance(error, str) and DIVERGED in error


def changed_defaults(method: str) -> tuple[dict, dict]:
    """The options of ``method`` whose default changed after the first runs were recorded, at the value they had
    before: its build options (``option(..., absent=)``: LoPT-1's ``residual``, False before the diagnosis made
    X0 + U V the default) and its training options (the method's ``changed_training_defaults``: LoPT-1's
    ``weight_decay``, 0 before its residual form recommended 1)."""
    try:
        cls = method_class(method)
    except KeyError:  # a PEFT baseline or another name the registry does not hold
        return {}, {}
    return utils.changed_defaults(cls.Config), dict(cls.changed_training_defaults)


def explicit(point: dict) -> dict:
    """The point with every option whose default changed named, at its old value unless the point names it (build
    options in ``options``, training options in ``train_options``): a point builds and trains what it did when it
    was first recorded, and its run key says so. The options are appended (and the entry appended to a point that
    had none), as ``pin_changed_defaults`` does."""
    built, trained = changed_defaults(point.get("method", ""))
    out = point
    for entry, changed in (("options", built), ("train_options", trained)):
        given = point.get(entry) or {}
        missing = {k: v for k, v in changed.items() if k not in given}
        if missing:
            out = {**out, entry: {**given, **missing}}
    return out


def pin_changed_defaults(record: Path, out: Path | None = None) -> int:
    """Rewrite a committed record (and the run folders of ``out``, if given) so that every run names the options
    whose default changed since it ran (``explicit``): its params, its metrics' options and its key. Run once when
    a default changes; a second run changes nothing. The number of runs rewritten."""
    data = read_json(record)
    changed = 0
    for run in data["runs"]:
        params = run["status"]["params"]
        pinned = explicit(params)
        if pinned is params:
            continue
        key = run_key(pinned)
        if out is not None and (out / run["key"]).is_dir() and not (out / key).exists():
            (out / run["key"]).rename(out / key)  # its run folder, if this machine has it, under the new key
            for name in ("status.json", "metrics.json"):
                if (out / key / name).is_file():
                    saved = read_json(out / key / name)
                    write_json(out / key / name, {**saved, **({"params": pinned} if name == "status.json"
                                                              else named(pinned))})
        run["status"]["params"], run["key"] = pinned, key
        run["metrics"].update(named(pinned))
        changed += 1
    data["runs"].sort(key=lambda r: r["key"])
    write_json(record, data)
    return changed


def named(point: dict) -> dict:
    """The options a run's metrics name (as the worker writes them), from its point."""
    return {k: point[k] for k in ("options", "train_options") if k in point}


def pin_every_record(out_of: dict[str, Path]) -> dict[str, int]:
    """``pin_changed_defaults`` on every ``results/*_runs.json``, with the run folders of ``out_of[name]`` if any."""
    return {path.name: pin_changed_defaults(path, out_of.get(path.stem.removesuffix("_runs")))
            for path in sorted(RESULTS.glob("*_runs.json"))}


@dataclass
class Sweep:
    """The runs of one report under ``out``, recorded in ``record`` (described by ``about``) when there is one."""

    out: Path
    record: Path | None = None
    about: str = ""

    def recorded(self) -> list[dict]:
        """The runs in the record (each: its key, status and metrics); none without a record."""
        return read_json(self.record)["runs"] if self.record and self.record.is_file() else []

    def restore(self) -> int:
        """Write the recorded runs back into ``out`` as finished run folders (metrics and status), so that the sweep
        skips them; say and return how many."""
        restored = 0
        for run in self.recorded():
            folder = self.out / run["key"]
            if not (folder / "status.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / "metrics.json", run["metrics"])
                write_json(folder / "status.json", run["status"])
                restored += 1
        print(f"{restored} recorded runs restored into {self.out}", flush=True)
        return restored

    def save_record(self) -> int:
        """Record every finished run of ``out`` (with those recorded before), and every run that diverged (its
        status without the traceback, metrics ``{"diverged": true}``); the number of runs recorded."""
        runs = {run["key"]: run for run in self.recorded()}
        for status_path in sorted(self.out.glob("*/status.json")):
            status, key = read_json(status_path), status_path.parent.name
            if status["status"] == "ok" and (status_path.parent / "metrics.json").is_file():
                runs[key] = {"key": key, "status": status, "metrics": read_json(status_path.parent / "metrics.json")}
            elif diverged(status):
                runs[key] = {"key": key, "status": {k: v for k, v in status.items() if k != "traceback"},
                             "metrics": {"diverged": True}}
        write_json(self.record, {"about": self.about, "runs": sorted(runs.values(), key=lambda r: r["key"])})
        return len(runs)

    def run(self, points: list[dict], strict: bool = True, diverged_ok: bool = False, **fixed) -> pd.DataFrame:
        """Every point through the worker notebook, finished runs skipped; the table of runs. Finished runs are
        recorded even when the sweep stops. ``strict``: a failed run stops the report (after the others ran), for a
        table with holes is not a result; otherwise failed runs stay in the table with their status.
        ``diverged_ok``: a run that diverged is a result (a learning-rate grid's), kept in the table with its
        status, never retried and never counted as a failure."""
        done = [p for p in points if diverged_ok and self._diverged(p)]
        points = [explicit(p) for p in points]  # each builds what its record says it built
        try:
            table = run_sweep(WORKER, [p for p in points if p not in done], self.out, profile="cpu", fixed=fixed) \
                if len(done) < len(points) else None
        finally:
            if self.record:
                self.save_record()
        table = gather(self.out, points) if done else table  # with the diverged runs, in the points' order
        failed = table[(table["status"] != "ok") & ~table.apply(lambda row: diverged_ok and diverged(row), axis=1)]
        if strict and len(failed):
            raise RuntimeError(f"{len(failed)} runs failed (their status.json under {self.out} says why); re-run to "
                               "retry them:\n" + failed[["error"]].to_string())
        return table

    def _diverged(self, point: dict) -> bool:
        path = self.out / run_key(point) / "status.json"
        return path.is_file() and diverged(read_json(path))


def intervals(table: pd.DataFrame, by: list[str], value: str) -> list[dict]:
    """Per group of ``by``: mean, 95% interval, n and the seeds' values (seed → value) of ``value``."""
    rows = stats.summarise(table, by, value).drop(columns="pm").to_dict(orient="records")
    groups = table.groupby(by, sort=False)
    for row, (_, part) in zip(rows, groups, strict=True):
        row["values"] = dict(zip(part["seed"].tolist(), part[value].tolist(), strict=True))
    return rows


def paired_differences(table: pd.DataFrame, value: str, baseline: str, by: str, scale: float = 100.0,
                       unit: str = " points") -> list[dict]:
    """Per group of ``by`` but ``baseline``: the 95% interval of its per-seed differences from ``baseline``, and
    their text ("lopt2 − prompt_tuning: −1.2 points [−3.0, 0.6]")."""
    paired = stats.paired_table(table, value, baseline, by=by, scale=scale, unit=unit)
    return [{by: row[by], "baseline": row["baseline"], "mean": row["mean"], "low": row["low"], "high": row["high"],
             "n": row["n"], "verdict": row["verdict"], "text": row["difference"]}
            for row in paired.to_dict(orient="records")]
