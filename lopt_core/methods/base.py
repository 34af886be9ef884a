"""The interface every method implements, and the input-prompt machinery LoPT shares with PT.

A method is an ``nn.Module`` holding only its own parameters; the frozen backbone is passed in
at each call. ``model_inputs`` builds the backbone's keyword arguments from a batch;
``hidden_states`` returns final hidden states aligned with ``batch["input_ids"]``, so the trainer
can score exactly the positions that count, whatever the method did to the sequence.

Methods trust the batch they are given: the callers that hand one over (the scorers in
``lopt_core.evaluation.scoring``, ``decoding.prefill``) check once that it is right-padded and that it fits
the context with the method's ``extra_positions`` (``scoring.check_batch``).
"""
from __future__ import annotations

import dataclasses
import re
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lopt_core.model.backbone import Backbone
from lopt_core.utils import option

PROMPT_LEN = "n: soft tokens of an input prompt, prefix positions (prefix-tuning) or tokens generated per layer (IAPT)"


@dataclass
class MethodConfig:
    """Fields shared by every method. ``prompt_len`` is n (also the prefix length)."""

    prompt_len: int = option(20, PROMPT_LEN)
    seed: int = option(0, "seed of the method's initial parameters")

    def __post_init__(self):
        if not isinstance(self.prompt_len, int) or self.prompt_len < 1:
            raise ValueError(f"prompt_len must be a positive integer, got {self.prompt_len!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


INITS = ("vocab", "sample_vocab", "text", "random", "saved")
TOKEN_INITS = ("vocab", "sample_vocab", "text")  # the starts made of tokens' embeddings (kept as ids where needed)


@dataclass
class PromptInitConfig(MethodConfig):
    """How an input prompt starts: sampled vocabulary words, a text, random vectors, or a trained prompt."""

    init: str = option("vocab", "start: 'vocab' (embeddings of sampled common words), 'sample_vocab' (of any rows of "
                                "the embedding table, uniformly with replacement: PEFT's SAMPLE_VOCAB), 'text' (of "
                                "init_text), "
                                "'random' (Gaussian at the embeddings' scale), 'saved' (the input prompt of the "
                                "method saved in init_path, e.g. a trained prompt tuning)")
    init_text: str = option("Classify the sentiment of the text.", "the text of init='text'")
    init_path: str | None = option(None, "init='saved': a saved method's folder (a run's `method/`) or a run folder")

    def __post_init__(self):
        super().__post_init__()
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if (self.init == "saved") != (self.init_path is not None):
            raise ValueError("init='saved' and init_path go together: init='saved' starts from the prompt of the "
                             f"method saved in init_path (got init={self.init!r}, init_path={self.init_path!r})")


@dataclass
class CachedPrompt:
    """A method's effect as a reusable cache prefix: per layer (K, V), each (n_kv, n, head_dim).

    ``includes_bos``: the prefix starts with the backbone's BOS, so requests go in without theirs.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]
    includes_bos: bool = False

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[1] if self.layers else 0


class PromptMethod(nn.Module, ABC):
    """Base class: a parameter-efficient method attached to a frozen backbone.

    Every batch a method sees is right-padded and fits the context with its ``extra_positions``: its
    callers check (``lopt_core.evaluation.scoring.check_batch``).
    """

    name: ClassVar[str] = ""
    # how figures and prose name the method ("LoPT-1"); ``lopt_core.methods.readable`` puts it in place of the
    # registry key at the start of a label. Empty: the key itself
    title: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    # the AdamW rate the trainer uses when none is given: a class attribute, read on the instance (prefix_tuning
    # sets its instance's from its parameterisation)
    recommended_lr: float = 3e-2
    # the AdamW weight decay the trainer uses when none is given (TrainConfig.weight_decay=None), read the same way:
    # 0 but for the residual LoPT-1, whose decay bounds the change it learns
    recommended_weight_decay: float = 0.0
    # training options whose default for this method changed after runs were recorded → the value those runs trained
    # with (the benchmarks' records name it in their points, so an old run's key still says what it trained)
    changed_training_defaults: ClassVar[dict] = {}
    # where the method's fixed prompt goes (analysis, dynamics, export): "input" (``input_prompt()``, X (n, d) before
    # the text's embeddings), "kv" (``kv_table()``, (n, L·2·n_kv·head_dim): keys and values at every layer) or None
    # (no fixed prompt: zero-shot has none, IAPT generates its prompts from each input)
    prompt_kind: ClassVar[str | None] = None
    # the PEFT adapter that holds the method's whole effect (lopt_core.serving.interop exports it), or None: no PEFT
    # equivalent (DePT's prompt is fixed, but its offsets change each input's own embeddings)
    peft_type: ClassVar[str | None] = None

    def __init__(self, config: MethodConfig, backbone: Backbone, *, initialise: bool = True):
        """``initialise=False``: a saved state is about to be loaded (``load_method``), so a subclass gives its
        parameters placeholder values instead of its data-dependent start (sampled words, a fit, a calibration
        pass). The base has no start of its own."""
        super().__init__()
        self.config = config
        self.dims = {"hidden_size": backbone.hidden_size, "num_layers": backbone.num_layers,
                     "num_kv_heads": backbone.num_kv_heads, "head_dim": backbone.head_dim}

    @abstractmethod
    def model_inputs(self, backbone: Backbone, batch: dict) -> dict:
        """Keyword arguments for ``backbone.transformer`` built from a right-padded batch; the
        ``attention_mask`` returned covers every position the forward pass ends up caching."""

    def hidden_states(self, backbone: Backbone, batch: dict) -> torch.Tensor:
        """Final hidden states (B, T, d) at the batch's own token positions."""
        out = backbone.transformer(**self.model_inputs(backbone, batch), use_cache=False)
        return out.last_hidden_state

    def token_embeddings(self, backbone: Backbone, batch: dict) -> torch.Tensor:
        """The embeddings (B, T, d) the batch's own tokens enter the model with: the frozen model's, unless the
        method changes them (DePT's offsets). Decoding starts each row's continuation from its last one."""
        return backbone.embed(batch["input_ids"])

    @property
    def extra_positions(self) -> int:
        """Positions the method adds in front of (or inside) every input: they count against the context."""
        return self.config.prompt_len

    @abstractmethod
    def parameter_formula(self) -> int:
        """Closed-form count of trainable parameters (the tests check it against the count)."""

    def prompt_kv(self, backbone: Backbone) -> CachedPrompt:
        """The method's effect as a cache prefix that every request can start from.

        Serving computes this once per task and reuses it for every request (``lopt_core.serving.server``).
        Input-dependent methods cannot, and say so.
        """
        raise NotImplementedError(f"{self.name} has no input-independent prompt to cache")

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups (torch's idiom) of the training step: one group at ``lr`` by default."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def factor_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """Pairs (A, B) of parameters that the method uses only as their product A @ B (LoPT-1's X = U V): the
        optimiser's preconditioned step (``TrainConfig.precondition``) acts on them. None by default."""
        return []

    def diagnostics(self) -> dict[str, float]:
        """Numbers about the method's own state worth watching during training (``TrainConfig.dynamics``
        writes them to history.csv each step); none by default."""
        return {}

    def outer_groups(self) -> list[dict]:
        """Parameter groups trained apart (bi-level training): the trainer steps them after each training step,
        on an ``outer`` split carved from train (``lopt_core.training.outer``). None by default."""
        return []

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def stored_parameters(self) -> int:
        """What is kept per task after training (paper convention); default: the trainable ones."""
        return self.trainable_parameters()

    def extra_repr(self) -> str:
        fields = ", ".join(f"{field}={value!r}" for field, value in self.config.to_dict().items()
                           if not isinstance(value, (list, tuple)))
        return f"{fields}, trainable={self.trainable_parameters():,}"


# --------------------------------------------------------------------- input (embedding) prompts
class InputPromptMethod(PromptMethod):
    """Methods whose prompt X (n, d) is prepended to the input embeddings (Lester et al.).

    The sequence becomes ``[X; E(x)]``, or ``[BOS; X; E(x)]`` when the tokenizer adds BOS (Llama-3,
    Gemma: the model expects BOS first), the attention mask gets n ones, and positions run on from the
    prompt. Subclasses define only how X is parameterised, in ``input_prompt``.
    """

    prompt_kind = "input"
    peft_type = "PROMPT_TUNING"

    @abstractmethod
    def input_prompt(self) -> torch.Tensor:
        """The soft prompt X (n, d) this method's parameters make."""

    def _insert_at(self, backbone: Backbone, batch: dict) -> int:
        """1 after a BOS the tokenizer put first, else 0 (the same for every row of a right-padded batch)."""
        bos = backbone.tokenizer.bos_token_id
        if not adds_bos(backbone) or bos is None:
            return 0
        starts = batch["input_ids"][:, 0] == bos
        if bool(starts.all()):
            return 1
        if bool(starts.any()):
            raise ValueError("some rows start with BOS and some do not: encode every row the same way "
                             "(the tokenizer adds BOS; Task.collate keeps it)")
        return 0

    def model_inputs(self, backbone: Backbone, batch: dict) -> dict:
        return self._inputs_with_prompt(backbone, batch, self._insert_at(backbone, batch))

    def hidden_states(self, backbone: Backbone, batch: dict) -> torch.Tensor:
        at = self._insert_at(backbone, batch)
        inputs = self._inputs_with_prompt(backbone, batch, at)
        h = backbone.transformer(**inputs, use_cache=False).last_hidden_state  # (B, n+T, d)
        n = self.config.prompt_len
        return torch.cat([h[:, :at], h[:, at + n:]], dim=1)  # (B, T, d)

    def token_embeddings(self, backbone: Backbone, batch: dict) -> torch.Tensor:
        return self.text_embeddings(backbone, batch, self._insert_at(backbone, batch))

    def text_embeddings(self, backbone: Backbone, batch: dict, at: int) -> torch.Tensor:
        """The embeddings (B, T, d) of the batch's own tokens, which X goes between at column ``at``: the frozen
        model's (DePT adds its offsets to them)."""
        return backbone.embed(batch["input_ids"])

    def _inputs_with_prompt(self, backbone: Backbone, batch: dict, at: int) -> dict:
        """The batch's embeddings with X inserted at column ``at``, and its mask with n ones there."""
        embeds = self.text_embeddings(backbone, batch, at)  # (B, T, d)
        B = embeds.shape[0]
        with torch.autocast(backbone.device.type, enabled=False):  # X in fp32 as the frozen embeddings are
            X = self.input_prompt()  # (n, d): under bf16 autocast U V would round the prompt before the model
        X = X.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, n, d)
        mask = batch["attention_mask"]
        ones = mask.new_ones(B, X.shape[1])
        return {
            "inputs_embeds": torch.cat([embeds[:, :at], X, embeds[:, at:]], dim=1),  # (B, n+T, d)
            "attention_mask": torch.cat([mask[:, :at], ones, mask[:, at:]], dim=1),
        }

    @torch.no_grad()
    def prompt_kv(self, backbone: Backbone) -> CachedPrompt:
        """Run the soft prompt alone through the model (under the backbone's precision, as requests run):
        its K/V at positions 0..n-1 are exactly what every later token attends to (causal attention)."""
        from lopt_core.model.kv import cache_layers, new_cache

        X = self.input_prompt().to(backbone.dtype).unsqueeze(0)  # (1, n, d)
        bos = adds_bos(backbone)
        if bos:  # [BOS][X]: the cache then holds BOS too, and requests drop theirs
            first = backbone.embed(torch.tensor([[backbone.tokenizer.bos_token_id]], device=backbone.device))
            X = torch.cat([first, X], dim=1)
        with backbone.autocast():
            cache = backbone.transformer(inputs_embeds=X, use_cache=True, past_key_values=new_cache()).past_key_values
        return CachedPrompt([(k[0], v[0]) for k, v in cache_layers(cache)], includes_bos=bos)


_ADDS_BOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer → adds_bos, asked once each


def adds_bos(backbone: Backbone) -> bool:
    """Whether the tokenizer puts BOS first by itself (Gemma does, SmolLM2 does not); cached per tokenizer."""
    tok = backbone.tokenizer
    if tok not in _ADDS_BOS:
        _ADDS_BOS[tok] = (tok.bos_token_id is not None
                          and tok("a", add_special_tokens=True)["input_ids"][:1] == [tok.bos_token_id])
    return _ADDS_BOS[tok]


WORD = re.compile(r" ?[A-Za-z]{3,}")


def vocab_token_ids(backbone: Backbone, n: int, seed: int, top: int = 5000) -> list[int]:
    """n distinct ids of common word tokens (among the first ``top`` ids), drawn with ``seed``.

    BPE vocabularies put frequent merges first, so low ids are frequent words; this is the
    usual "sampled vocabulary" initialisation of prompt tuning.
    """
    tok = backbone.tokenizer
    limit = min(top, backbone.vocab_size)
    pool = [i for i in range(limit) if WORD.fullmatch(tok.decode([i]))]
    if len(pool) < n:  # tiny byte-level vocabularies: fall back to any non-special id
        special = set(tok.all_special_ids)
        pool = [i for i in range(backbone.vocab_size) if i not in special]
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(pool), generator=g)[:n]
    if len(pick) < n:  # fewer distinct tokens than n: repeat
        pick = pick.repeat((n + len(pick) - 1) // len(pick))[:n]
    return [pool[i] for i in pick.tolist()]


def text_token_ids(backbone: Backbone, text: str, n: int) -> list[int]:
    """Token ids of ``text``, repeated or cut to exactly n (PEFT's TEXT init)."""
    ids = backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError("init_text tokenises to nothing; give a non-empty text")
    return (ids * ((n + len(ids) - 1) // len(ids)))[:n]
