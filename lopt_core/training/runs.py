"""A run folder: where one training run lives, and the rules for opening, resuming and overwriting it.

    config.json     what was trained (method, task, backbone, training config, learning rate, …)
    run_info.json   versions, device, git sha, seed, world size
    checkpoint.pt   the latest trainer state (for resume); tensors and plain data only
    history.csv     one row per step;  metrics.json  validation (selection) and test (report) metrics
    method/         the best state (safetensors);   loss.png

Every file is written atomically with the user's umask. Checkpoints are read with
``torch.load(weights_only=True)``: a folder received from someone else cannot run code on load. What
config.json and run_info.json hold, and what a checkpoint must match to be resumed, is written here too.
"""
from __future__ import annotations

import dataclasses
import pickle
import shutil
import warnings
from pathlib import Path

import pandas as pd
import torch

from lopt_core.utils import atomic_path, read_json, run_info, write_json

CHECKPOINT = "checkpoint.pt"
RESULTS = ("checkpoint.pt", "metrics.json", "history.csv", "loss.png")


class RunFolder:
    """One run's folder. ``open`` applies the rules; the trainer reads and writes through it."""

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def open(self, record: dict, info: dict, resume: bool = False) -> bool:
        """Prepare the folder for a run described by ``record``; True if there is a checkpoint to resume.

        A folder that already holds a run is refused unless ``resume`` (continue it) or ``overwrite``
        (replace it); ``resume`` on a folder with no checkpoint starts afresh, and says so."""
        if resume and self.checkpoint.is_file():
            return True
        if resume:
            warnings.warn(f"{self.path} holds no checkpoint to resume: starting a fresh run", stacklevel=3)
        elif (self.path / "config.json").exists() and not self.overwrite:
            raise FileExistsError(f"{self.path} already holds a run. Pass resume=True to continue it, "
                                  "overwrite=True to replace it, or choose another folder.")
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in RESULTS:
            (self.path / stale).unlink(missing_ok=True)
        shutil.rmtree(self.path / "method", ignore_errors=True)
        write_json(self.path / "config.json", record)
        write_json(self.path / "run_info.json", info)
        return False

    # ---------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, state: dict) -> None:
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self, expected: dict, device) -> dict:
        """The checkpoint's state, after checking that it belongs to the run ``expected`` describes
        (``{"config": training config without progress, "method_name", "method_config"}``)."""
        try:
            state = torch.load(self.checkpoint, map_location=device, weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{self.checkpoint} holds Python objects, not only tensors and plain data, and the kit does not "
                "load those (unpickling can run any code). It was not written by this kit's trainer; delete it "
                f"to start afresh. ({str(err).splitlines()[0]})") from None
        # progress changes nothing; an option added after the checkpoint was written trained at its default
        saved = {k: v for k, v in state["config"].items() if k != "progress"}
        if "lr" in saved and saved["lr"] is None:  # written before the trainer resolved the rate into its config
            saved["lr"] = self.rate_used()
        now = {k: v for k, v in expected["config"].items() if k != "progress" and k in saved}
        defaults = expected.get("defaults", {})
        added = {k: v for k, v in expected["config"].items()
                 if k not in saved and k != "progress" and k in defaults and v != defaults[k]}
        if added:
            raise ValueError(f"cannot resume {self.checkpoint}: it was written before the training option(s) "
                             f"{sorted(added)} existed, so it trained with their defaults "
                             f"{ {k: defaults[k] for k in added} }, not {added}. Resume with the defaults, or start "
                             "afresh in another folder.")
        if saved != now:
            diff = {k: (saved.get(k), now.get(k)) for k in now if saved.get(k) != now.get(k)}
            raise ValueError(f"cannot resume {self.checkpoint}: the training config differs (saved, now): {diff}")
        mine = (expected["method_name"], expected["method_config"])
        if state["method_name"] != mine[0]:
            raise ValueError(f"cannot resume {self.checkpoint}: it holds {state['method_name']}, not {mine[0]}")
        diff = method_config_diff(mine[0], state["method_config"], mine[1])
        if diff:
            raise ValueError(f"cannot resume {self.checkpoint}: its {mine[0]} was built with other options (saved, "
                             f"now; a saved run that predates an option counts as the kit behaved then): {diff}")
        return state

    def rate_used(self) -> float | None:
        """The learning rate the run in this folder trained at, as its config.json says (None: no config.json)."""
        try:
            return read_json(self.path / "config.json")["train"]["lr"]
        except (FileNotFoundError, KeyError):
            return None

    # ---------------------------------------------------------------------------------- results
    def write_results(self, history: pd.DataFrame, metrics: dict, method, backbone_name: str) -> None:
        from lopt_core.methods import save_method

        with atomic_path(self.path / "history.csv") as tmp:
            history.to_csv(tmp, index=False)
        save_method(method, self.path / "method", backbone_name)
        if len(history):
            from lopt_core.evaluation import plots  # matplotlib only when there is a figure to write

            fig = plots.loss_curves({method.name: history})
            plots.save(fig, self.path / "loss.png")
            plots.plt.close(fig)
        write_json(self.path / "metrics.json", metrics)


# -------------------------------------------------------------------------------------- what a run is
def run_config(method, backbone, task, config, lr: float, extra: dict | None = None) -> dict:
    """config.json: what was trained (method, task, backbone, training config with the learning rate used,
    parameter counts) and what the caller adds (``extra``, e.g. a sweep's point)."""
    return {"method": method.name, "method_config": method.config.to_dict(), "task": task.name,
            "task_source": task.source, "task_fingerprint": task.fingerprint(), "split_notes": dict(task.split_notes),
            "backbone": backbone.name, "backbone_spec": backbone.spec,
            "precision": backbone.precision, "dtype": str(backbone.dtype).removeprefix("torch."),
            "train": {**dataclasses.asdict(config), "lr": lr},
            "trainable_parameters": method.trainable_parameters(),
            "stored_parameters": method.stored_parameters(), **(extra or {})}


def run_environment(config, backbone, accelerator) -> dict:
    """run_info.json: versions, machine, device, git sha and seed, and how Accelerate's processes train together."""
    world = accelerator.num_processes
    return {**run_info(config.seed, backbone.device), "world_size": world,
            "global_batch_size": config.batch_size * config.gradient_accumulation * world,
            "mixed_precision": accelerator.mixed_precision}


def run_identity(config, method) -> dict:
    """What a checkpoint holds of its run and must match to be resumed (``RunFolder.load_checkpoint``)."""
    return {"config": dataclasses.asdict(config), "defaults": dataclasses.asdict(type(config)()),
            "method_name": method.name, "method_config": method.config.to_dict()}


def load_run(run_dir: str | Path) -> dict:
    """The config and metrics of a finished run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (config.json missing)")
    out = {"config": read_json(run_dir / "config.json")}
    if (run_dir / "metrics.json").is_file():
        out["metrics"] = read_json(run_dir / "metrics.json")
    return out


def method_config_diff(name: str, saved: dict, now: dict) -> dict:
    """Where ``now`` differs from the method config a checkpoint was ``saved`` with: option → (saved, now). An option
    the method gained after the checkpoint was written is absent from it, and matches only at the value the kit
    behaved as then (its default, or its ``absent`` value where the default changed since: the old run could not
    set it)."""
    from lopt_core.methods import saved_config

    then, given = saved_config(name, saved), saved_config(name, now)
    return {k: (then.get(k), given.get(k)) for k in sorted(set(then) | set(given)) if then.get(k) != given.get(k)}
