"""The kit's records: ``benchmarks/results/<name>.json``, written by the scripts in ``benchmarks/`` (three seeds,
validation selecting, test reporting). A lesson reads one to set its own run beside the kit's figures::

    kit = kit_record("lopt_diagnosis")   # None, with a line saying so, where the checkout has no record
    values = seed_values(kit["capacity"]["summary"], kit["fixes"]["summary"], task="yesno")
    stats.paired_difference(values["lopt1 (r=2)"], values["prompt_tuning"])   # paired by seed
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


def seed_values(*tables: list[dict], **match) -> dict[str, dict]:
    """The per-seed values of a record's summary rows, by label: ``{label: {seed: value}}``, ready for
    ``stats.paired_difference``. ``tables`` are lists of rows with ``label`` and ``values`` (a record's
    ``summary``); ``match`` keeps the rows whose fields equal it (``task="yesno"``, ``budget="35k"``). A label in
    two tables must carry the same values there (one run reported twice), else the record is ambiguous: an error."""
    found: dict[str, dict] = {}
    for row in (row for table in tables for row in table):
        if any(row.get(key) != value for key, value in match.items()):
            continue
        if "values" not in row:
            raise ValueError(f"the row {row.get('label')!r} keeps no per-seed values; its record predates them: "
                             f"rerun its script with --record-only")
        label = row["label"]
        if label in found and found[label] != row["values"]:
            raise ValueError(f"{label!r} appears twice with different per-seed values: "
                             f"{found[label]} and {row['values']}; narrow it with a field ({', '.join(row)})")
        found[label] = row["values"]
    return found


def writer(stem: str) -> str | None:
    """The benchmark script that writes the record ``stem`` (``family_runs`` → ``benchmarks/family.py``), if any."""
    benchmarks = RESULTS.parent
    for candidate in (stem, stem.removesuffix("_runs")):
        if (benchmarks / f"{candidate}.py").is_file():
            return f"benchmarks/{candidate}.py"
    return None
