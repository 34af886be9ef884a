"""Do the notebook tests' learning assertions hold on another machine? ``python benchmarks/learning_margins.py``

``tests/test_notebooks.py`` asserts, under profile ``ci``, that training did something: the trained prompt's test
loss is below the untrained one's and zero-shot's (01), every trained prompt's test loss is below zero-shot's (02),
prefix-tuning's training loss fell by 15% and prompt tuning's fell (05), every IAPT variant's training loss fell
(06). A newcomer's machine takes another float path than ours, and an assertion whose margin is smaller than the
difference between two float paths passes here and fails there (05's old BLEU assertion did). This script runs
those notebooks under ``ci`` with one and with two torch threads (two float paths, as between two machines), reads
each assertion's margin (how far it is from failing, in the assertion's own units) from the metrics the test reads,
and says whether every margin is positive under both thread counts and larger than the change between them.

Writes ``benchmarks/results/learning_margins.json`` (about 10 min on 2 cores); exits 1 when a margin is too thin.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from lopt_core.lab.notebooks import execute_notebook, list_notebooks

from harness.results import load, save

NOTEBOOKS = ("01", "02", "05", "06")


def margins(name: str, m: dict) -> dict[str, float]:
    """Each learning assertion of ``tests/test_notebooks.py`` for notebook ``name``: bound − value (> 0: holds)."""
    if name == "01":
        return {"trained loss < initial loss": m["initial"]["loss"] - m["trained"]["loss"],
                "trained loss < zero-shot loss": m["zero_shot"]["loss"] - m["trained"]["loss"]}
    if name == "02":
        return {f"{r['method']} seed {r.get('seed', 0)}: test loss < zero-shot loss":
                m["zero_shot_loss"] - r["test_loss"] for r in m["runs"]}
    if name == "05":
        prefix, prompt = m["loss"]["prefix_tuning"], m["loss"]["prompt_tuning"]
        return {"prefix-tuning: last loss < 0.85 × first": 0.85 * prefix["first"] - prefix["last"],
                "prompt tuning: last loss < first": prompt["first"] - prompt["last"]}
    return {f"{label}: last loss < first": loss["first"] - loss["last"] for label, loss in m["loss"].items()}


def run(threads: int, notebooks: list[str], root: Path) -> dict[str, dict[str, float]]:
    """The margins of ``notebooks`` run under ``ci`` in kernels that start with ``threads`` torch threads."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the kernel inherits it; torch starts with that many threads
    out = {}
    for path in list_notebooks(notebooks):
        name = path.name[:2]
        execute_notebook(path, root / f"threads-{threads}", profile="ci")
        metrics = json.loads((root / f"threads-{threads}" / path.stem / "metrics.json").read_text())
        out[name] = margins(name, metrics)
        print(f"{threads} thread(s) {path.stem}: " + "; ".join(f"{k} by {v:.4f}" for k, v in out[name].items()),
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", nargs="*", default=list(NOTEBOOKS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        by_threads = {t: run(t, args.notebooks, Path(tmp)) for t in (1, 2)}
    earlier = [r for r in (load("learning_margins") or {}).get("rows", []) if r["notebook"] not in args.notebooks]
    rows, holds = [], all(r["holds"] for r in earlier)  # the notebooks not run again keep their rows
    for name in args.notebooks:
        for assertion, one in by_threads[1][name].items():
            two = by_threads[2][name].get(assertion)
            ok = two is not None and min(one, two) > 0 and min(one, two) > abs(one - two)
            holds &= ok
            rows.append({"notebook": name, "assertion": assertion, "margin_1_thread": one, "margin_2_threads": two,
                         "difference": None if two is None else abs(one - two), "holds": ok})
            print(f"{name} {assertion:58s} 1 thread {one:+.4f}  2 threads "
                  f"{'missing' if two is None else f'{two:+.4f}'}  {'holds' if ok else 'TOO THIN'}")
    rows = sorted(earlier + rows, key=lambda r: NOTEBOOKS.index(r["notebook"]) if r["notebook"] in NOTEBOOKS else 99)
    path = save("learning_margins", {"profile": "ci", "rule": "margin > 0 under 1 and 2 threads and larger than the "
                                                              "change between them", "holds": holds, "rows": rows})
    print(f"written to {path}")
    sys.exit(0 if holds else 1)


if __name__ == "__main__":
    main()
