"""Task splits from the Hugging Face hub (``load_task(name, source="hf")``, online, needs ``datasets``).

Each task names its dataset, subset, the adapter below that maps the hub's schema onto the kit's rows,
and which hub split plays which of ours.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from lopt_core.data.formats import SUPERGLUE, DataError, Row


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
            rows = convert(list(loaded[theirs])) if convert is hf_e2e else \
                convert_records(loaded[theirs], convert, f"{dataset}/{theirs}")
            if rows:
                out[ours] = post(rows)
    return out


# ------------------------------------------------------------------------------------ adapters
# Each adapter maps one hub schema onto the kit's rows (lopt_core.data.formats gives the schemas).

def convert_records(records: Iterable[dict], convert: Callable[[dict], Row | None], name: str) -> list[Row]:
    """The rows ``convert`` makes of hub records (it returns None to skip one: an unlabelled test row)."""
    rows = []
    for i, rec in enumerate(records, 1):
        try:
            row = convert(rec)
        except (KeyError, ValueError) as err:
            raise DataError(f"hf:{name}: record {i}: {err!r}") from None
        if row is not None:
            rows.append(row)
    return rows


def _labelled(value: int, n: int) -> int | None:
    if value == -1:  # unlabelled test split
        return None
    if not 0 <= int(value) < n:
        raise ValueError(f"label {value} out of range 0..{n - 1}")
    return int(value)


def hf_sst2(rec: dict) -> Row | None:
    label = _labelled(rec["label"], 2)
    return None if label is None else {"text": rec["sentence"].strip(), "label": label}


def hf_ag_news(rec: dict) -> Row | None:
    # The hub copy joins title and description into one "text" field.
    return {"title": rec["text"].strip(), "description": "", "label": _labelled(rec["label"], 4)}


def hf_superglue(task: str) -> Callable[[dict], Row | None]:
    columns, mapping = SUPERGLUE[task]

    def convert(rec: dict) -> Row | None:
        label = _labelled(rec["label"], len(set(mapping.values())))
        return None if label is None else {**{c: rec[c].strip() for c in columns}, "label": label}
    return convert


def hf_e2e(records: Sequence[dict]) -> list[Row]:
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for rec in records:
        grouped.setdefault(rec["meaning_representation"].strip(), []).append(rec["human_reference"].strip())
    return [{"mr": mr, "references": refs} for mr, refs in grouped.items()]
