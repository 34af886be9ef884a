"""Where an input prompt starts: a vocabulary sample, a text, random vectors at embedding scale, or the prompt of a
saved method (``init="saved"``). A helper module (its name starts with ``_``): it reads saved methods through the
registry, which imports ``base``, so these functions cannot live in ``base`` without an import cycle."""
from __future__ import annotations

from pathlib import Path

import torch

from lopt_core.methods.base import INITS, InputPromptMethod, PromptInitConfig, text_token_ids, vocab_token_ids
from lopt_core.model.backbone import Backbone
from lopt_core.utils import seeded


def saved_prompt(backbone: Backbone, path: str, n: int) -> torch.Tensor:
    """The input prompt X (n, d) of the method saved in ``path`` (its folder, or a run folder holding ``method/``)."""
    from lopt_core.methods import METHOD_JSON, load_method  # the registry imports base: here, not at the top

    folder = Path(path)
    if not (folder / METHOD_JSON).is_file() and (folder / "method" / METHOD_JSON).is_file():
        folder = folder / "method"
    saved = load_method(folder, backbone)
    if not isinstance(saved, InputPromptMethod):
        raise ValueError(f"the method saved in {folder} ({saved.name}) has no input prompt to start from")
    with torch.no_grad():
        X = saved.input_prompt().float().cpu()
    if X.shape[0] != n:
        raise ValueError(f"the prompt saved in {folder} has {X.shape[0]} soft tokens; this method has prompt_len={n}")
    return X


def initial_prompt(backbone: Backbone, n: int, init: str, init_text: str, seed: int,
                   init_path: str | None = None) -> torch.Tensor:
    """An (n, d) starting prompt in embedding space (through the embedding module), or a saved method's prompt."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "saved":
        return saved_prompt(backbone, init_path, n)
    if init == "random":
        g = torch.Generator().manual_seed(seed)
        std = backbone.embedding_matrix.detach().float().std().item()
        return torch.randn(n, backbone.hidden_size, generator=g) * std
    return embedded(backbone, start_token_ids(backbone, n, init, init_text, seed))


def start_token_ids(backbone: Backbone, n: int, init: str, init_text: str, seed: int) -> list[int]:
    """The n token ids of a start made of tokens: init='vocab' (common words drawn with ``seed``), 'sample_vocab'
    (any rows, PEFT's way) or 'text'."""
    if init == "sample_vocab":
        return sample_vocab_ids(backbone, n, seed)
    return vocab_token_ids(backbone, n, seed) if init == "vocab" else text_token_ids(backbone, init_text, n)


def sample_vocab_ids(backbone: Backbone, n: int, seed: int) -> list[int]:
    """n ids drawn uniformly with replacement from every row of the embedding table (special and padding rows
    included, no tokenizer), as PEFT's ``SAMPLE_VOCAB`` draws them: after an (n, d) normal draw (PEFT builds its
    ``nn.Embedding`` first), so that PEFT under ``torch.manual_seed(seed)`` draws the same ids."""
    with seeded(seed):
        torch.empty(n, backbone.hidden_size).normal_()  # PEFT's nn.Embedding(n, d) init, drawn before its ids
        return torch.randint(0, backbone.embedding_matrix.shape[0], (n,), dtype=torch.long).tolist()


def embedded(backbone: Backbone, ids: list[int]) -> torch.Tensor:
    """The embeddings (len(ids), d) of token ids, in fp32 on the CPU, outside autograd."""
    with torch.no_grad():
        return backbone.embed(torch.tensor(ids, device=backbone.device)).float().cpu()


def starting_prompt(backbone: Backbone, config: PromptInitConfig, initialise: bool = True) -> torch.Tensor:
    """The (n, d) prompt an input-prompt method starts from: ``config.init``'s, or zeros when a saved state
    is about to replace it (``initialise=False``)."""
    if not initialise:
        return torch.zeros(config.prompt_len, backbone.hidden_size)
    return initial_prompt(backbone, config.prompt_len, config.init, config.init_text, config.seed, config.init_path)
