import os

os.environ.setdefault("MPLBACKEND", "Agg")
from pathlib import Path

import pytest
import torch

from lopt_core.backbone import load_backbone

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LOPT_SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_llama():
    return load_backbone("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return load_backbone("tiny-gpt2", device="cpu")


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-gpt2"])
def tiny(request):
    """Each tiny backbone in turn (Llama: RoPE + grouped-query attention; GPT-2: learned positions)."""
    return load_backbone(request.param, device="cpu")


@pytest.fixture(scope="session")
def embedded():
    return load_backbone("embedded", device="cpu")


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (it sits beside the repository as ../shared/data in the "
                    "project's workplace; set LOPT_SHARED_DATA to point elsewhere)")
    return path
