"""Wall time of each lesson under a profile, one lesson at a time, each recorded as soon as it finishes (with the
date, the thread count and the machine's fp32 matmul speed) in ``results/notebook_times.json``; the lessons'
**Runtime** lines are then written from that record, so that no lesson states a time nobody measured.

    python benchmarks/notebook_series.py --profile demo              # every lesson
    python benchmarks/notebook_series.py --profile demo --missing    # only those the record lacks (resumes)
    python benchmarks/notebook_series.py --only 03 04 --profile ci
    python benchmarks/notebook_series.py --write-lines               # the Runtime lines from the record, nothing run
    python benchmarks/notebook_series.py --only 07 --keep outputs      # keep the executed lesson, to read it
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lopt_core.lab import notebooks as lessons
from lopt_core.lab.notebooks import execute_notebook, list_notebooks, matmul_gflops, read_runtimes
from lopt_core.utils import run_info, write_json


def record(run: dict) -> None:
    """Append one measured lesson to the record (written whole, atomically)."""
    runs = read_runtimes() + [run]
    about = ("wall time of each lesson per profile (python benchmarks/notebook_series.py); a lesson's Runtime line "
             "reads the newest run per profile")
    write_json(lessons.RUNTIMES, {"about": about, "runs": runs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--only", nargs="*", default=None, help="lesson number prefixes (default: all)")
    parser.add_argument("--missing", action="store_true", help="skip lessons the record has for this profile")
    parser.add_argument("--write-lines", action="store_true", help="only rewrite the Runtime lines from the record")
    parser.add_argument("--keep", default=None,
                        help="a folder to keep the executed lessons in, to read their outputs (default: none kept)")
    args = parser.parse_args()
    failed: list[str] = []
    if not args.write_lines:
        done = {r["notebook"] for r in read_runtimes() if r["profile"] == args.profile}
        todo = [p for p in list_notebooks(args.only) if not (args.missing and p.stem in done)]
        sha = run_info(None, None).get("git_sha")
        for path in todo:
            speed = matmul_gflops()
            with tempfile.TemporaryDirectory() as scratch:
                out = Path(args.keep) if args.keep else Path(scratch)  # kept: <keep>/<lesson>/, as make demo's outputs/
                try:
                    info = execute_notebook(path, out, args.profile)
                except Exception as err:  # noqa: BLE001 - a failing lesson is reported; the others still run
                    failed.append(path.stem)
                    print(f"{path.stem}: failed under {args.profile}: {type(err).__name__}: {err}"[:2000], flush=True)
                    continue
            record({"notebook": path.stem, "profile": args.profile, "seconds": round(info["seconds"], 1),
                    "date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
                    "matmul_gflops": round((speed + matmul_gflops()) / 2, 1), "git_sha": sha})
            print(f"{path.stem:36s} {args.profile:5s} {info['seconds']:7.1f} s", flush=True)
    changed = lessons.write_runtime_lines()
    print(f"Runtime lines rewritten: {', '.join(changed) or 'none changed'}")
    if failed:
        raise SystemExit(f"failed, not recorded: {', '.join(failed)}")


if __name__ == "__main__":
    main()
