"""Run profiles shared by the notebooks: ``ci`` (seconds to minutes, every notebook in CI),
``cpu`` (minutes, visible learning on this kind of machine) and ``gpu`` (larger backbones and
full datasets; needs a GPU and, for hub models and datasets, internet).

A notebook's ``parameters`` cell picks a profile; any value given there overrides the profile's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    name: str
    backbone: str = "embedded"
    task: str = "yesno"
    task_source: str = "auto"
    steps: int = 20
    batch_size: int = 8
    eval_every: int = 10
    eval_limit: int | None = 64  # dev rows scored during training and in the notebooks' tables
    train_limit: int | None = None
    seeds: tuple[int, ...] = (0,)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "ci": Profile("ci", steps=16, eval_every=8, eval_limit=48, train_limit=256),
    "cpu": Profile("cpu", steps=120, eval_every=30, eval_limit=None, seeds=(0, 1, 2)),
    "gpu": Profile("gpu", backbone="gpt2-large", task="sst2", task_source="hf", steps=2000, batch_size=32,
                   eval_every=200, eval_limit=None, seeds=(0, 1, 2)),
}


def get_profile(name: str, **overrides) -> Profile:
    """The named profile with ``overrides`` (ignoring those left as None)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(Profile.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown profile settings: {', '.join(sorted(unknown))}")
    if "seeds" in given:
        given["seeds"] = tuple(given["seeds"])
    return replace(PROFILES[name], **given)
