"""Trained prompts out of the kit and back in: PEFT adapters, and prompt embeddings for serving engines.

PEFT (the pinned 0.21.2) saves every prompt-learning adapter as ``adapter_config.json`` plus
``adapter_model.safetensors`` holding one tensor, ``prompt_embeddings``:

- ``PROMPT_TUNING``: X (n, d), prepended to the input embeddings *before everything*, BOS included.
  The kit puts X *after* a BOS the tokenizer adds (the model expects BOS first). So for BOS-adding
  tokenizers the kit exports n + 1 virtual tokens whose row 0 is E(BOS): inputs then go in **without**
  BOS (``add_special_tokens=False``) and PEFT computes exactly the kit's ``[BOS][X][text]``.
- ``PREFIX_TUNING``: the table (n, L·2·n_kv·head_dim), per token K_0, V_0, K_1, V_1, ... with
  grouped-query attention sized by the key/value heads (``token_dim = n_kv·head_dim``,
  ``num_attention_heads = n_kv``): the kit's own table layout (``lopt_core.model.kv.split_table``).

prompt_tuning, lopt1, lopt2 and residual_prompt_tuning export their materialised X; prefix_tuning its materialised
table (the MLP is dropped, as PEFT does on save). IAPT generates its prompts from each input and DePT offsets each
input's own embeddings: neither has a PEFT equivalent.
PEFT keeps no unknown config keys, so what only the kit knows (the method, its rank, the task, the BOS row)
goes into a sidecar ``lopt_kit.json`` beside the adapter.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lopt_core.methods import build_method, list_methods, make_config, method_class
from lopt_core.methods.base import PromptMethod, adds_bos
from lopt_core.model.backbone import DTYPES, Backbone
from lopt_core.model.embedded import prepare_embedded
from lopt_core.model.kv import kv_width
from lopt_core.utils import atomic_path, read_json, write_json

ADAPTER_CONFIG, ADAPTER_WEIGHTS, SIDECAR = "adapter_config.json", "adapter_model.safetensors", "lopt_kit.json"
# PEFT's adapter types the kit writes and reads (a method's ``peft_type``) → where their prompt goes
PEFT_TYPES = {"PROMPT_TUNING": "input", "P_TUNING": "input", "PREFIX_TUNING": "kv"}
EMBEDDINGS, EMBEDDINGS_JSON = "prompt_embeds.safetensors", "prompt_embeds.json"
# PEFT's PeftModel asks every model for ``is_gradient_checkpointing``, which transformers 5 deprecates with a
# FutureWarning on each adapter load; nothing the user can change. This one message only, for whoever imports interop.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def prompt_embeddings(method: PromptMethod) -> torch.Tensor:
    """The method's fixed prompt, materialised, as PEFT stores it (``prompt_embeddings``): X (n, d) of an input
    prompt, or the K/V table (n, L·2·n_kv·head_dim) of a prefix; fp32, on the CPU."""
    if method.peft_type is None:
        exportable = [name for name in list_methods() if method_class(name).peft_type is not None]
        raise ValueError(f"{method.name} has no fixed prompt to export and no PEFT equivalent (zero-shot has no "
                         "prompt; IAPT generates its prompts from each input and DePT offsets each input's own "
                         "embeddings, while PEFT and serving engines take one prompt per task). Export "
                         f"{', '.join(exportable)}.")
    prompt = method.input_prompt() if method.prompt_kind == "input" else method.kv_table()
    return prompt.detach().float().cpu()


def _exported_prompt(method: PromptMethod, backbone: Backbone) -> tuple[str, torch.Tensor, bool]:
    """(where the prompt goes, the materialised tensor, whether row 0 is E(BOS)); refuses a method without a PEFT
    equivalent."""
    X = prompt_embeddings(method)  # (n, d) or the K/V table (n, W)
    bos = method.prompt_kind == "input" and adds_bos(backbone)
    if bos:  # PEFT prepends before everything: E(BOS) becomes virtual token 0
        ids = torch.tensor([backbone.tokenizer.bos_token_id], device=backbone.device)
        with torch.no_grad():
            X = torch.cat([backbone.embed(ids).float().cpu(), X])
    return method.prompt_kind, X.contiguous(), bos


def base_model_path(backbone: Backbone) -> str:
    """What ``base_model_name_or_path`` should say: for the embedded backbone, the local converted folder
    (a dequantised Q4_1 copy of SmolLM2-135M-Instruct, not the hub's weights); else the spec it was loaded
    from (a hub id or a folder)."""
    return str(prepare_embedded()) if backbone.spec == "embedded" else backbone.spec


def peft_config(method: PromptMethod, backbone: Backbone, num_virtual_tokens: int):
    """PEFT's own config object for the exported adapter (its classes check the fields)."""
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    common = {"task_type": "CAUSAL_LM", "num_virtual_tokens": num_virtual_tokens, "num_layers": backbone.num_layers,
              "num_transformer_submodules": 1, "inference_mode": True,
              "base_model_name_or_path": base_model_path(backbone)}
    if method.peft_type == "P_TUNING":  # the encoder's settings, as PEFT records them (its output is what is saved)
        c = method.config
        return PromptEncoderConfig(token_dim=backbone.hidden_size, num_attention_heads=backbone.num_heads,
                                   encoder_reparameterization_type=c.encoder.upper(),
                                   encoder_hidden_size=c.encoder_hidden_size or backbone.hidden_size,
                                   encoder_num_layers=c.encoder_num_layers, encoder_dropout=c.encoder_dropout, **common)
    if method.peft_type == "PROMPT_TUNING":
        return PromptTuningConfig(token_dim=backbone.hidden_size, num_attention_heads=backbone.num_heads,
                                  prompt_tuning_init="RANDOM", **common)
    width = kv_width(backbone)  # PEFT sizes prefixes by the key/value heads (grouped-query attention)
    return PrefixTuningConfig(token_dim=width, num_attention_heads=backbone.num_kv_heads, encoder_hidden_size=width,
                              prefix_projection=False, **common)


def to_peft(method: PromptMethod, backbone: Backbone, folder: str | Path, task: str | None = None) -> Path:
    """Write ``method`` as a PEFT adapter folder that ``PeftModel.from_pretrained(base_model, folder)`` loads.

    Returns the folder. With a BOS-adding tokenizer an input prompt gets E(BOS) as virtual token 0: feed
    PEFT the text without BOS (``tokenizer(text, add_special_tokens=False)``).
    """
    kind, X, bos = _exported_prompt(method, backbone)
    config = peft_config(method, backbone, X.shape[0])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # PEFT's own writer, then an atomic move
        config.save_pretrained(tmp)
        shutil.move(Path(tmp) / ADAPTER_CONFIG, folder / ADAPTER_CONFIG)
    with atomic_path(folder / ADAPTER_WEIGHTS) as tmp:
        save_file({"prompt_embeddings": X}, str(tmp), metadata={"format": "pt"})
    write_json(folder / SIDECAR, {
        "method": method.name, "config": method.config.to_dict(), "task": task, "backbone": backbone.name,
        "backbone_spec": backbone.spec, "peft_type": method.peft_type, "bos_row": bos,
        "inputs": "without BOS (virtual token 0 is E(BOS))" if bos else "as the tokenizer encodes them",
        "trainable_parameters": method.trainable_parameters(), "stored_parameters": method.stored_parameters()})
    return folder


def read_sidecar(folder: str | Path) -> dict | None:
    """The kit's metadata saved beside an exported adapter (method, rank, task, BOS row), if any."""
    path = Path(folder) / SIDECAR
    return read_json(path) if path.is_file() else None


def from_peft(folder: str | Path, backbone: Backbone) -> PromptMethod:
    """A PEFT ``PROMPT_TUNING``, ``P_TUNING`` or ``PREFIX_TUNING`` adapter as a kit method (prompt_tuning; p_tuning
    materialised: the encoder's output, which is all PEFT saves; or prefix_tuning holding the raw table), for
    evaluation, analysis, the rank slider and ``Server``.

    The kit's own exports come back exactly (their E(BOS) row removed); an adapter trained with PEFT on a
    BOS-adding tokenizer had its virtual tokens before BOS, where the kit puts them after it: a warning says so.
    An adapter saved with ``prefix_projection=True`` holds the table its MLP made: it comes back as that table.
    """
    folder = Path(folder)
    config, X = _read_adapter(folder)
    kind = PEFT_TYPES[config["peft_type"]]
    sidecar = read_sidecar(folder) or {}
    if kind == "input":
        if X.shape[1] != backbone.hidden_size:
            raise ValueError(f"{folder}: the prompt has width {X.shape[1]} but {backbone.name} has d = "
                             f"{backbone.hidden_size}: it was trained for another backbone")
        if sidecar.get("bos_row"):
            X = X[1:]
        elif adds_bos(backbone):
            warnings.warn(f"{folder}: PEFT put these {X.shape[0]} virtual tokens before BOS; the kit puts them after "
                          "it, so its outputs differ a little from PEFT's (docs/interop.md)",
                          stacklevel=2)
        if config["peft_type"] == "P_TUNING":  # the encoder's output, as PEFT saved it: p_tuning, materialised
            method = build_method("p_tuning", backbone, prompt_len=X.shape[0], reparam=False,
                                  **_encoder_options(config, backbone))
            with torch.no_grad():
                method.prompt.copy_(X.to(method.prompt.device))
            return method
        config = make_config("prompt_tuning", prompt_len=X.shape[0])
        return method_class("prompt_tuning")(config, backbone, prompt=X).to(backbone.device)
    width = backbone.num_layers * 2 * kv_width(backbone)
    if X.shape[1] != width:
        raise ValueError(f"{folder}: the prefix table has width {X.shape[1]} but {backbone.name} needs L·2·n_kv·"
                         f"head_dim = {width}: it was trained for another backbone")
    method = build_method("prefix_tuning", backbone, prompt_len=X.shape[0], reparam=False, init="zero")
    with torch.no_grad():
        method.table.copy_(X.to(method.table.device))
    return method


def _encoder_options(config: dict, backbone: Backbone) -> dict:
    """p_tuning's encoder options from a P_TUNING adapter_config (a record: the encoder itself is not saved)."""
    hidden = config.get("encoder_hidden_size")
    return {"encoder": str(config.get("encoder_reparameterization_type", "MLP")).lower(),
            "encoder_hidden_size": None if hidden in (None, backbone.hidden_size) else hidden,
            "encoder_num_layers": config.get("encoder_num_layers", 2),
            "encoder_dropout": config.get("encoder_dropout", 0.0)}


def _read_adapter(folder: Path) -> tuple[dict, torch.Tensor]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    found = sorted(p.name for p in folder.iterdir())
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{folder} is not a PEFT adapter: it has no {ADAPTER_CONFIG} (found: "
                         f"{', '.join(found) or 'nothing'})")
    config = read_json(folder / ADAPTER_CONFIG)
    peft_type = config.get("peft_type")
    if peft_type not in PEFT_TYPES:
        raise ValueError(f"{folder} holds a {peft_type} adapter; the kit imports {', '.join(PEFT_TYPES)} "
                         "adapters (one prompt per task). Weight adapters such as LoRA change the backbone itself.")
    if config.get("num_transformer_submodules", 1) != 1:
        raise ValueError(f"{folder} is an encoder-decoder adapter (num_transformer_submodules = "
                         f"{config['num_transformer_submodules']}); the kit works with decoder-only models")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ValueError(f"{folder} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS} (found: {', '.join(found)}); "
                         "save the adapter with safe_serialization=True (PEFT's default)")
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    if "prompt_embeddings" not in state:
        raise ValueError(f"{folder}/{ADAPTER_WEIGHTS} has no 'prompt_embeddings' tensor (it has: "
                         f"{', '.join(state)})")
    X = state["prompt_embeddings"].float()
    n = config.get("num_virtual_tokens")
    if X.ndim != 2 or (n is not None and X.shape[0] != n):
        raise ValueError(f"{folder}: prompt_embeddings has shape {tuple(X.shape)}, expected ({n}, width)")
    return config, X


# ------------------------------------------------------------------------------------ serving engines
def export_embeddings(method: PromptMethod, backbone: Backbone, folder: str | Path, dtype: str = "fp32",
                      task: str | None = None) -> Path:
    """Write X as ``prompt_embeds.safetensors`` (tensor ``prompt_embeds``, (n, d), in ``dtype``) and
    ``prompt_embeds.json`` saying where it goes: engines that take input embeddings (vLLM's ``prompt_embeds``,
    llama.cpp's ``llama_batch.embd``) are then given ``[E(BOS)]? [X] [E(tokens)]`` (recipe in docs/interop.md)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if method.prompt_kind != "input":
        raise ValueError(f"{method.name} does not act on the input embeddings (it changes every layer's keys and "
                         "values, or is generated per input), so an engine's prompt_embeds cannot carry it; export "
                         "--format peft instead (prefix_tuning)")
    X = prompt_embeddings(method).to(DTYPES[dtype]).contiguous()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / EMBEDDINGS) as tmp:
        save_file({"prompt_embeds": X}, str(tmp), metadata={"format": "pt"})
    bos = adds_bos(backbone)
    write_json(folder / EMBEDDINGS_JSON, {
        "backbone": backbone.name, "base_model": base_model_path(backbone), "method": method.name, "task": task,
        "dtype": dtype, "n": X.shape[0], "d": X.shape[1], "position": "after_bos" if bos else "first",
        "bos_token_id": backbone.tokenizer.bos_token_id if bos else None,
        "request": ("[E(BOS); X; E(tokens without BOS)]" if bos else "[X; E(tokens)]")
                   + ", E = the model's own input embedding module (Gemma scales inside it)"})
    return folder


def load_embeddings(folder: str | Path) -> tuple[torch.Tensor, dict]:
    """X and its description, as ``export_embeddings`` wrote them."""
    folder = Path(folder)
    return load_file(str(folder / EMBEDDINGS))["prompt_embeds"], read_json(folder / EMBEDDINGS_JSON)
