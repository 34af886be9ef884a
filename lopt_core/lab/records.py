"""The kit's records: ``benchmarks/results/<name>.json``, written by the scripts in ``benchmarks/`` (three seeds,
validation selecting, test reporting). A lesson reads one to set its own run beside the kit's figures::

    kit = kit_record("lopt_diagnosis")   # None, with a line saying so, where the checkout has no record
"""
from __future__ import annotations

from pathlib import Path

from lopt_core.utils import read_json

ROOT = Path(__file__).resolve().parents[2]  # the checkout: notebooks/, benchmarks/
RESULTS = ROOT / "benchmarks" / "results"


def kit_record(name: str, results: str | Path | None = None, quiet: bool = False) -> dict | None:
    """The record ``name`` (``"lopt_diagnosis"``; ``.json`` optional) from ``results`` (default: this checkout's
    ``benchmarks/results/``), or None where it is absent (an installed package carries no records). Unless ``quiet``,
    prints one line: where the record came from (script and date), or which script would write it."""
    stem = name.removesuffix(".json")
    if not stem or Path(stem).name != stem:
        raise ValueError(f"a record is named by its file stem, like 'lopt_diagnosis', not {name!r}")
    folder = Path(results) if results is not None else RESULTS
    path, script = folder / f"{stem}.json", writer(stem)
    if not path.is_file():
        if not quiet:
            print(f"no kit record {stem!r} in {folder}: " + (f"python {script} writes it" if script
                                                               else "the scripts in benchmarks/ write the records"))
        return None
    record = read_json(path)
    if not quiet:
        made = f", {record['date'][:10]}" if isinstance(record.get("date"), str) else ""
        print(f"the kit's record {stem!r} ({script or path.name}{made})")
    return record


def writer(stem: str) -> str | None:
    """The benchmark script that writes the record ``stem`` (``family_runs`` → ``benchmarks/family.py``), if any."""
    benchmarks = RESULTS.parent
    for candidate in (stem, stem.removesuffix("_runs")):
        if (benchmarks / f"{candidate}.py").is_file():
            return f"benchmarks/{candidate}.py"
    return None
