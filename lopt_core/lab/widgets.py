"""Interactive widgets (ipywidgets): a rank slider over a trained prompt, and a method explorer.

Both keep their logic in plain methods (``update``, ``describe``) so tests drive them headlessly
by setting a widget's value in Python.
"""
from __future__ import annotations

import warnings

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from lopt_core.evaluation import plots
from lopt_core.evaluation.evaluator import evaluate
from lopt_core.lab.analysis import input_prompt, kv_bytes_per_request, singular_values, truncate_method
from lopt_core.methods import build_method, config_fields


class RankSlider:
    """Move r from 1 to n: the trained prompt is truncated to rank r and re-scored on a fixed set
    of evaluation rows (cached per r, so moving back is instant); the spectrum with the cut and
    the accuracy-vs-rank curve with the current point are redrawn."""

    def __init__(self, method, backbone, task, split: str = "validation", limit: int = 64,
                 baseline: float | None = None):
        self.method, self.backbone, self.task = method, backbone, task
        self.split, self.limit, self.baseline = split, limit, baseline
        self.s = singular_values(input_prompt(method, backbone)).numpy()
        self.n = len(self.s)
        self.cache: dict[int, dict] = {}
        self.evaluations = 0  # how many ranks were actually scored
        self.draws = 0  # how many times the figure was redrawn
        self.slider = widgets.IntSlider(value=self.n, min=1, max=self.n, step=1, description="rank r",
                                        continuous_update=False)
        self.label = widgets.HTML()
        self.output = widgets.Output()
        self.slider.observe(lambda change: self.update(change["new"]), names="value")

    def score(self, r: int) -> dict:
        """Metrics of the rank-r truncation (evaluated once per r)."""
        if r not in self.cache:
            cut = truncate_method(self.method, r, self.backbone)
            self.cache[r] = evaluate(cut, self.backbone, self.task, self.split, self.limit)
            self.evaluations += 1
        return self.cache[r]

    def figure(self, r: int):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
        plots.spectrum({"trained prompt": self.s}, cut=r, ax=left)
        seen = pd.DataFrame([{"rank": rank, "accuracy": m["accuracy"], "variant": "truncated"}
                             for rank, m in sorted(self.cache.items())])
        plots.accuracy_vs_rank(seen, current=(r, self.cache[r]["accuracy"]), baseline=self.baseline, ax=right,
                               split=self.split)
        return fig

    def update(self, r: int) -> dict:
        metrics = self.score(r)
        energy = float((self.s[:r] ** 2).sum() / (self.s ** 2).sum())
        self.label.value = (f"<b>r = {r}</b>: accuracy {metrics['accuracy']:.3f} on {metrics['n']} {self.split} rows, "
                            f"{energy:.1%} of the prompt's energy kept")
        self.output.clear_output(wait=True)
        with self.output:
            fig = self.figure(r)
            display(fig)
            plt.close(fig)
        self.draws += 1
        return metrics

    def widget(self) -> widgets.VBox:
        self.update(self.slider.value)
        return widgets.VBox([self.slider, self.label, self.output])


def rank_slider(method, backbone, task, **options) -> RankSlider:
    """A ``RankSlider`` for a trained prompt_tuning / LoPT method; display ``.widget()``."""
    return RankSlider(method, backbone, task, **options)


class MethodExplorer:
    """Pick a method, n and r: see trainable and stored parameters and the K/V bytes per request."""

    def __init__(self, backbone, methods: tuple[str, ...] = ("prompt_tuning", "lopt1", "lopt2", "prefix_tuning")):
        self.backbone = backbone
        self.method = widgets.Dropdown(options=list(methods), value=methods[0], description="method")
        self.prompt_len = widgets.IntSlider(value=20, min=1, max=100, description="n")
        self.rank = widgets.IntSlider(value=2, min=1, max=20, description="r")
        self.label = widgets.HTML()
        for w in (self.method, self.prompt_len, self.rank):
            w.observe(lambda change: self.describe(), names="value")

    def describe(self) -> dict:
        name, n = self.method.value, self.prompt_len.value
        self.rank.max = max(1, n)
        options = {"prompt_len": n}
        if "rank" in config_fields(name):
            options["rank"] = min(self.rank.value, n)
        self.rank.disabled = "rank" not in config_fields(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the explorer shows the counts; no need to warn
            method = build_method(name, self.backbone, **options)
        info = {"method": name, **options, "trainable": method.trainable_parameters(),
                "stored": method.stored_parameters(), "kv_bytes": kv_bytes_per_request(method, self.backbone)}
        self.label.value = (f"<b>{name}</b> n={n}" + (f", r={options['rank']}" if "rank" in options else "")
                            + f": {info['trainable']:,} trainable, {info['stored']:,} stored parameters "
                            f"({100 * info['stored'] / self.backbone.num_parameters:.4f}% of the backbone); "
                            f"{info['kv_bytes'] / 1024:.0f} KiB of K/V per request (bf16)")
        return info

    def widget(self) -> widgets.VBox:
        self.describe()
        return widgets.VBox([self.method, self.prompt_len, self.rank, self.label])
