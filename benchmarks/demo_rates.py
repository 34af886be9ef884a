"""The ``demo`` profile's learning rates, tuned on validation only: ``python benchmarks/demo_rates.py``.

``make demo`` trains prompt tuning, LoPT-1 and LoPT-2 (n = 20, r = 2) for the ``demo`` profile's 60 steps on its
built-in task. At that budget the rate decides most of what a learner sees, so each method trains once per rate of
a half-decade grid (seed 0) and the best **validation** accuracy picks its rate; the test split is never scored
here (``test_split=None``). A best rate at the edge of the grid is followed by the next one out (half a decade),
until the best is inside. Rates already in ``benchmarks/results/demo_rates.json`` are not trained again. The chosen
rates are written into ``lopt_core/profiles.py`` by hand, and a test checks that they are this file's best.
Writes ``benchmarks/results/demo_rates.json`` (about 15 min on 2 cores).
"""
from __future__ import annotations

import argparse
import math
import time

from lopt_core.lab.profiles import get_profile
from lopt_core.methods import build_method
from lopt_core.training.trainer import Trainer, TrainingDiverged
from lopt_core.utils import seed_everything

from harness.results import load, save

METHODS = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}}
RATES = [3e-3, 1e-2, 3e-2, 1e-1]
STEP = math.sqrt(10)


def measured() -> dict:
    """method → {rate: result} already in the results file (a re-run trains only what is missing)."""
    done = load("demo_rates")
    if done is None:
        return {}
    return {m: {float(lr): v for lr, v in r["by_rate"].items()} for m, r in done["results"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--rates", nargs="*", type=float, default=RATES)
    args = parser.parse_args()
    P = get_profile("demo")
    backbone, task = P.load_backbone(), P.load_task()
    done, results = measured(), {}
    for name in args.methods:
        by_rate, rates = dict(done.get(name, {})), sorted(set(args.rates) | set(done.get(name, {})))
        while True:
            for lr in rates:
                if lr in by_rate:
                    continue
                seed_everything(0)
                method = build_method(name, backbone, prompt_len=20, seed=0, **METHODS[name])
                start = time.perf_counter()
                try:
                    fit = Trainer(method, backbone, task,
                                  P.train_config(0, lr=lr, test_split=None, progress=False)).fit()
                except TrainingDiverged as err:  # a rate too high: recorded as such, never chosen
                    by_rate[lr] = {"validation_accuracy": None, "diverged": str(err).split(". ")[0],
                                   "seconds": time.perf_counter() - start}
                    print(f"{name:14s} lr {lr:<6g} diverged: {by_rate[lr]['diverged']}", flush=True)
                    continue
                by_rate[lr] = {"validation_accuracy": fit.metrics["validation"]["accuracy"],
                               "best_step": fit.metrics["best_step"], "seconds": time.perf_counter() - start}
                print(f"{name:14s} lr {lr:<6g} validation {by_rate[lr]['validation_accuracy']:.3f} "
                      f"(best step {fit.metrics['best_step']}, {time.perf_counter() - start:.0f} s)", flush=True)
            best = max(sorted(by_rate), key=lambda r: by_rate[r]["validation_accuracy"] or -1.0)
            edge = best / STEP if best == min(by_rate) else best * STEP if best == max(by_rate) else None
            if edge is None or float(f"{edge:.3g}") in by_rate or len(by_rate) >= len(args.rates) + 2:
                break
            rates.append(float(f"{edge:.3g}"))
        results[name] = {"by_rate": {lr: by_rate[lr] for lr in sorted(by_rate)}, "best_lr": best}
        print(f"{name:14s} best rate on validation: {best:g}", flush=True)
    path = save("demo_rates", {"config": {"profile": P.to_dict(), "prompt_len": 20, "methods": METHODS,
                                          "selection": "validation accuracy, seed 0; test never scored"},
                               "results": results})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
