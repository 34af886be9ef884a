"""Task splits from the Hugging Face hub (``load_task(name, source="hf")``, online, needs ``datasets``).

Each task names its dataset, subset, the adapter of ``lopt_core.data.formats`` that maps the hub's schema onto
the kit's rows, and which hub split plays which of ours.
"""
from __future__ import annotations

from collections.abc import Callable

from lopt_core.data import formats


def hub_splits(name: str, hf: tuple, post: Callable[[list[dict]], list[dict]]) -> dict[str, list[dict]]:
    """Rows per split of task ``name`` from the hub; ``hf`` is (dataset, subset, adapter, {ours: theirs})."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError("source='hf' needs the package datasets: pip install datasets") from err
    dataset, subset, convert, split_names = hf
    from lopt_core.utils import hub_offline_mode, hub_reachable

    if hub_offline_mode() or not hub_reachable():
        raise ConnectionError(f"cannot load {dataset}{'/' + subset if subset else ''} from the Hugging Face hub: "
                              f"this machine is offline. Download the files and use load_task({name!r}, path=...)")
    try:
        loaded = datasets.load_dataset(dataset, subset)
    except Exception as err:  # network, hub or cache errors all land here
        raise ConnectionError(
            f"could not load {dataset}{'/' + subset if subset else ''} from the Hugging Face hub: {err}. "
            f"Offline, download the files and use load_task({name!r}, path=...)") from err
    out = {}
    for ours, theirs in split_names.items():
        if theirs in loaded:
            rows = convert(list(loaded[theirs])) if convert is formats.hf_e2e else \
                formats._hf_rows(loaded[theirs], convert, f"{dataset}/{theirs}")
            if rows:
                out[ours] = post(rows)
    return out
