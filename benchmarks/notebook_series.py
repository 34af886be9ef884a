"""Wall time of the whole notebook series under a profile (default ``ci``), one notebook at a time.

    python benchmarks/notebook_series.py [--profile ci]

Writes benchmarks/results/notebook_series.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time

from lopt_core.lab.notebooks import execute_notebook, list_notebooks

from harness.results import save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args()
    runs, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for path in list_notebooks():
            info = execute_notebook(path, out, args.profile)
            runs.append({"notebook": path.name, "seconds": info["seconds"]})
            print(f"{path.name:40s} {info['seconds']:7.1f} s", flush=True)
    total = time.perf_counter() - start
    save("notebook_series", {"profile": args.profile, "runs": runs, "total_seconds": total})
    print(f"total {total:.0f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
