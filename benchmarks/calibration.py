"""Zero-shot on real SST-2's test split, with and without contextual calibration (Zhao et al., 2021).

    python benchmarks/calibration.py [--data ../../shared/data/sst2]

The embedded backbone scores " negative" / " positive" after "Review: {text}\\nSentiment:" for every test
sentence (1,821); the calibrated scorer divides the class probabilities by those of the content-free input
"N/A" and renormalises. Also the same on the built-in yes/no task, whose zero-shot scorer leans to one word.
Nothing is tuned here: the content-free text is the paper's. Writes ``benchmarks/results/calibration.json``.
"""
from __future__ import annotations

import argparse

from lopt_core.data import load_task
from lopt_core.evaluation.evaluator import evaluate
from lopt_core.methods import build_method
from lopt_core.model import load_backbone

from harness.results import data_option, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_option(parser, "sst2")
    args = parser.parse_args()
    backbone = load_backbone("embedded")
    zero_shot = build_method("zero_shot", backbone)
    results = {}
    for name, task in (("sst2", load_task("sst2", path=args.data)), ("yesno", load_task("yesno"))):
        plain = evaluate(zero_shot, backbone, task, "test", progress=True)
        fixed = evaluate(zero_shot, backbone, task, "test", progress=True, calibrate="N/A")
        results[name] = {"rows": plain["n"], "uncalibrated": plain, "calibrated": fixed}
        print(f"{name} test ({plain['n']} rows): macro-F1 {plain['macro_f1']:.3f} → {fixed['macro_f1']:.3f}, "
              f"accuracy {plain['accuracy']:.3f} → {fixed['accuracy']:.3f}; p(class | 'N/A') = "
              + ", ".join(f"{p:.3f}" for p in fixed["calibration"]["p_content_free"]))
    print(f"written to {save('calibration', {'content_free': 'N/A', 'split': 'test', 'results': results})}")


if __name__ == "__main__":
    main()
