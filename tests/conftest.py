"""The test matrix: every registered method (``METHODS``, one table of tiny options) × every tiny
backbone (``lopt_core.model.tiny.TINY_SPECS``), plus small tasks whose rows fit the smallest context
(tiny-gpt2's 64 positions) with room for a prompt and generated tokens."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
import functools
import shutil
import socket
from pathlib import Path

import pytest
import torch

from lopt_core.data import Task
from lopt_core.methods import build_method
from lopt_core.model import TINY_SPECS, load_backbone

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LOPT_SHARED_DATA", ROOT.parent / "shared" / "data"))
ATOL, RTOL = 1e-5, 1e-4  # fp32 on CPU

# LOPT_TORCH_THREADS=1: the suite on a second float path (as on another machine), to check that every learning
# assertion holds with a margin larger than the difference between two machines
torch.set_num_threads(int(os.environ.get("LOPT_TORCH_THREADS", min(2, torch.get_num_threads()))))

# label → (registered method, tiny options). A new method joins the matrix here, in one line.
METHODS = {
    "zero_shot": ("zero_shot", {}),
    "prompt_tuning": ("prompt_tuning", {"prompt_len": 5}),
    "lopt1": ("lopt1", {"prompt_len": 5, "rank": 2}),  # residual, the default: X0 + U V
    "lopt1_plain": ("lopt1", {"prompt_len": 5, "rank": 2, "residual": False}),  # U V, the paper's form
    "lopt2": ("lopt2", {"prompt_len": 6, "rank": 2}),
    "residual_pt": ("residual_prompt_tuning", {"prompt_len": 5, "bottleneck": 8}),
    "dept": ("dept", {"prompt_len": 4, "rank": 2, "positions": 6}),  # S = 6: some text tokens beyond it
    "p_tuning": ("p_tuning", {"prompt_len": 4, "encoder_hidden_size": 8}),
    "prefix_tuning": ("prefix_tuning", {"prompt_len": 5, "reparam_dim": 16}),
    "prefix_tuning_raw": ("prefix_tuning", {"prompt_len": 5, "reparam": False}),
    "iapt": ("iapt", {"bottleneck": 8}),
    "iapt_bilevel": ("iapt", {"bottleneck": 8, "bilevel": True, "bilevel_lr": 0.05}),
}
TRAINABLE = [m for m in METHODS if m != "zero_shot"]
# input-independent: served from a cached prompt (IAPT generates its prompts from each input; DePT offsets each
# input's own embeddings)
CACHEABLE = [m for m in METHODS if not m.startswith("iapt") and m != "dept"]


def make(label: str, backbone, perturb: float = 0.0, **extra):
    """Build a method of the table; ``perturb`` adds noise to its parameters, as if it were trained."""
    name, options = METHODS[label]
    method = build_method(name, backbone, **{**options, **extra})
    if perturb:
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in method.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=g).to(p.device))
    return method


@functools.cache
def backbone(spec: str):
    return load_backbone(spec, device="cpu", precision="fp32")


@pytest.fixture(scope="session", params=TINY_SPECS)
def tiny(request):
    """Each tiny backbone in turn (see ``lopt_core.model.tiny.TINY`` for what each one is there to test)."""
    return backbone(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return backbone("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return backbone("tiny-gpt2")


# the browser tests drive Debian's chromium (never a browser download), with nothing that phones home
CHROMIUM = os.environ.get("LOPT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLOW_MARKERS = ("slow", "notebook")  # the only tests that may load the embedded 135M backbone


@pytest.fixture(scope="session")
def executed_lessons(tmp_path_factory) -> Path:
    """Where the notebook tests leave each lesson executed under ``ci`` (``<stem>/<stem>.ipynb``, as ``make demo``
    lays out ``outputs/``): the book test builds from them, so that no lesson runs twice."""
    return tmp_path_factory.mktemp("executed")


def pytest_collection_modifyitems(config, items):
    """The book's tests last: they read the lessons the notebook tests executed."""
    items.sort(key=lambda item: item.get_closest_marker("book") is not None)  # stable: the rest keep their order


def is_slow(node) -> bool:
    return any(node.get_closest_marker(m) for m in SLOW_MARKERS)


def refuse_embedded(node, what: str):
    """Fail a fast test that loads the embedded backbone: ``-m "not slow and not notebook"`` runs on tiny ones."""
    pytest.fail(f"{node.nodeid} {what} (the 135M model): mark it @pytest.mark.slow", pytrace=False)


@pytest.fixture(autouse=True)
def fast_tests_load_no_embedded_backbone(request, monkeypatch):
    """Outside slow tests, loading the embedded backbone fails the test: ``load_backbone("embedded")``, the
    CLI's default backbone and a profile's all go through ``prepare_embedded``."""
    if not is_slow(request.node):
        monkeypatch.setattr("lopt_core.model.backbone.prepare_embedded",
                            lambda *args, **kwargs: refuse_embedded(request.node, "loads the embedded backbone"))


@pytest.fixture
def embedded(request):
    """The embedded SmolLM2-135M-Instruct (CPU, fp32), loaded once per session; for slow tests only."""
    if not is_slow(request.node):
        refuse_embedded(request.node, "uses the `embedded` fixture")
    return backbone("embedded")


TEXTS = ["a fine film", "dull and long", "loved it!", "not for me", "so funny", "a bore", "great cast",
         "weak plot", "moving", "flat", "a gem", "too slow"]
TABLES = ["name : A | food : French", "name : Bo | area : riverside", "name : C", "food : Thai | price : low"]


def short_task(label_words=("a", "b"), name="short") -> Task:
    """Classification with short rows; ("a", "b") are one byte-token each, (" good", " bad") several."""
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    return Task(name, "classification", "{text} =", {"train": rows[:8], "validation": rows[8:], "test": rows[8:]},
                label_words=label_words, label_names=("pos", "neg"))


def short_generation_task(name="short_gen") -> Task:
    rows = [{"table": t, "references": [f"{t.split(' : ')[1].split(' |')[0]} is nice.", "It is good."]}
            for t in TABLES]
    return Task(name, "generation", "Table: {table}\nText:", {"train": rows[:3], "validation": rows[3:],
                                                              "test": rows[3:]})


def batch_of(task: Task, backbone, n: int = 4, split: str = "train") -> dict:
    return task.collate(task.examples(split, n, expand_references=True)[:n], backbone.tokenizer)


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it sits beside the repository as ../shared/data in the "
                    "project's workplace; set LOPT_SHARED_DATA to point elsewhere)")
    return path
