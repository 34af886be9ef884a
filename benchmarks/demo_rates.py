"""The ``demo`` profile's learning rates, tuned on validation only: ``python benchmarks/demo_rates.py``.

``make demo`` trains prompt tuning, LoPT-1 and LoPT-2 (n = 20, r = 2) for the ``demo`` profile's steps on its
built-in task. At that budget the rate decides most of what a learner sees, so each method trains at every rate of a
half-decade grid on two seeds, and the rate is chosen with a stability margin (``harness.grid.stable_choice``): the
best mean **validation** accuracy among the rates whose seeds all converged and whose next rate up neither diverged
nor fell more than 10 points. A rate at the edge of stability turned the float differences between two CPUs into a
LoPT-2 below zero-shot; this rule keeps the demo away from that edge. The test split is never scored here
(``test_split=None``). A best rate at the edge of the grid is followed by the next one out (half a decade), until the
best is inside. Each finished run is recorded at once in ``benchmarks/results/<record>.json``, named by the budget
(``harness.grid.demo_rates_record``: e.g. ``demo_rates_60_steps_batch_4_residual``), and not trained again (a stopped
sweep resumes); a method's runs recorded with another weight decay than the one it now
trains with (LoPT-1's residual form took weight decay 1 as its default) are kept under ``superseded`` and its rates
tuned again. ``--steps``, ``--batch-size`` and ``--eval-every`` sweep a candidate budget before
the profile adopts it; the profile's own are the defaults. The chosen rates are
written into ``lopt_core/lab/profiles.py`` by hand, and a test checks that they are this file's choice;
``benchmarks/demo_check.py`` then checks them on three seeds and two thread counts.
About 40 s a run (60 steps of batch 4) on 2 cores.
"""
from __future__ import annotations

import argparse
import math
import time

from lopt_core.lab.profiles import get_profile
from lopt_core.methods import build_method
from lopt_core.training.trainer import Trainer, TrainingDiverged
from lopt_core.utils import seed_everything

from harness.grid import demo_rates_record, profile_settings, stable_choice, trained_decay
from harness.results import load, save

METHODS = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}}
RATES = [3e-3, 1e-2, 3e-2, 1e-1]
SEEDS = [0, 1]
STEP = math.sqrt(10)


def record_name(P) -> str:
    """The record of the demo's rates at the profile's budget and method options (``results/NAME.json``)."""
    return demo_rates_record(P.to_dict())


def measured(P) -> dict:
    """method → {rate: {seed: result}} already recorded for the profile's settings (a re-run trains only what is
    missing). Results of the one-seed format (before seeds were recorded) are seed 0's."""
    done = load(record_name(P))
    if done is None:
        return {}
    if profile_settings(done["config"]["profile"]) != profile_settings(P.to_dict()):
        raise SystemExit(f"results/{record_name(P)}.json was made under other demo settings "
                         f"({profile_settings(done['config']['profile'])}); move it aside to start over")
    return {m: {float(lr): {int(s): v for s, v in (r["seeds"] if "seeds" in r else {0: r}).items()}
                for lr, r in result["by_rate"].items()}
            for m, result in done["results"].items()}


def train(name: str, lr: float, seed: int, P, backbone, task) -> dict:
    seed_everything(seed)
    method = build_method(name, backbone, prompt_len=20, seed=seed, **P.options(name, **METHODS[name]))
    start = time.perf_counter()
    try:
        fit = Trainer(method, backbone, task, P.train_config(seed, method=name, lr=lr, test_split=None,
                                                             progress=False)).fit()  # the profile's decay
    except TrainingDiverged as err:  # a rate too high: recorded as such, never chosen
        result = {"validation_accuracy": None, "diverged": str(err).split(". ")[0],
                  "seconds": time.perf_counter() - start}
        print(f"{name:14s} lr {lr:<6g} seed {seed} diverged: {result['diverged']}", flush=True)
        return result
    result = {"validation_accuracy": fit.metrics["validation"]["accuracy"], "best_step": fit.metrics["best_step"],
              "seconds": time.perf_counter() - start}
    print(f"{name:14s} lr {lr:<6g} seed {seed} validation {result['validation_accuracy']:.3f} "
          f"(best step {fit.metrics['best_step']}, {result['seconds']:.0f} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--rates", nargs="*", type=float, default=RATES)
    parser.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    parser.add_argument("--steps", type=int, help="a candidate budget (default: the demo profile's own)")
    parser.add_argument("--eval-every", type=int, help="a candidate evaluation interval (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="a candidate batch size (default: the profile's)")
    parser.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                        help="a candidate form: LoPT-1 and LoPT-2 as X = X0 + (low-rank change) (default: the "
                             "profile's own forms)")
    args = parser.parse_args()
    forms = None if args.residual is None else {m: {"residual": bool(args.residual)} for m in ("lopt1", "lopt2")}
    P = get_profile("demo", steps=args.steps, eval_every=args.eval_every, batch_size=args.batch_size,
                    method_options=forms)
    backbone, task = P.load_backbone(), P.load_task()
    decays = {m: trained_decay(m, P, backbone, METHODS[m]) for m in METHODS}
    done = measured(P)
    saved = load(record_name(P)) if done else None
    results, superseded = (saved["results"], saved.get("superseded", {})) if saved else ({}, {})
    for name in list(results):  # trained with another weight decay than the method now takes: not its rates
        then = results[name].get("weight_decay", 0.0)  # the record before decay was recorded: the trainer's 0
        if then != decays[name]:
            print(f"{name}: its recorded runs trained with weight decay {then:g}, it now trains with "
                  f"{decays[name]:g}: they are kept under 'superseded' and its rates tuned again", flush=True)
            superseded.setdefault(name, []).append({**results.pop(name), "weight_decay": then})
            done.pop(name, None)

    def record(name: str, runs: dict) -> dict:
        """Write every run of ``name`` so far with the rate they choose; the choice (``stable_choice``'s)."""
        accuracies = {lr: [runs[lr][s]["validation_accuracy"] for s in sorted(runs[lr])] for lr in runs if runs[lr]}
        choice = stable_choice(accuracies)
        results[name] = {"by_rate": {lr: {"validation_accuracy": choice["mean"][lr],
                                          "seeds": {s: runs[lr][s] for s in sorted(runs[lr])}}
                                     for lr in sorted(accuracies)},
                         "best_lr": choice["lr"], "refused": choice["refused"], "weight_decay": decays[name]}
        save(record_name(P), {"config": {"profile": P.to_dict(), "prompt_len": 20,
                                           "methods": {m: P.options(m, **o) for m, o in METHODS.items()},
                                                 "selection": "validation accuracy, mean over seeds, with a "
                                                              "stability margin (harness.grid.stable_choice); test "
                                                              "never scored"},
                                      "results": results, **({"superseded": superseded} if superseded else {})})
        return choice

    for name in args.methods:
        runs = {lr: dict(seeds) for lr, seeds in done.get(name, {}).items()}
        rates = sorted(set(args.rates) | set(runs))
        while True:
            for lr in rates:
                for seed in args.seeds:
                    if seed not in runs.setdefault(lr, {}):
                        runs[lr][seed] = train(name, lr, seed, P, backbone, task)
                        record(name, runs)  # every finished run, at once
            choice = record(name, runs)
            means = {lr: m if m is not None else -1.0 for lr, m in choice["mean"].items()}
            best = max(sorted(means), key=means.get)  # the best mean, before the margin
            edge = best / STEP if best == min(runs) else best * STEP if best == max(runs) else None
            if edge is None or float(f"{edge:.3g}") in runs or len(runs) >= len(args.rates) + 2:
                break
            rates.append(float(f"{edge:.3g}"))
        print(f"{name:14s} rate chosen on validation with a stability margin: {choice['lr']}; refused: "
              + "; ".join(f"{lr:g} ({why})" for lr, why in choice["refused"].items()), flush=True)
    print(f"written to results/{record_name(P)}.json")


if __name__ == "__main__":
    main()
