"""One training step of each contestant on one fixed batch: the kit's methods (scoring the label logits at the
answer position) and PEFT's (its causal-LM loss on the answer token), AdamW, same frozen backbone, same number of
virtual tokens. ``build_steps`` gives each as a callable, for timing, FLOP counting and memory."""
from __future__ import annotations

import argparse
import copy

import torch

from lopt_core.data import Task
from lopt_core.evaluation.scoring import loss_and_scores
from lopt_core.methods import build_method
from lopt_core.methods.base import vocab_token_ids

OURS = {"prompt_tuning": {}, "lopt1": {"rank": 2}, "lopt2": {"rank": 2}, "residual_prompt_tuning": {}, "dept": {},
        "p_tuning": {}, "prefix_tuning": {}, "iapt": {}}
PEFT = ("peft_prompt_tuning", "peft_p_tuning", "peft_prefix_tuning", "peft_lora_r8")
# the kit's method → the PEFT method it is compared with (the family's input prompts: the forward of prompt tuning)
PAIRS = {"prompt_tuning": "peft_prompt_tuning", "lopt1": "peft_prompt_tuning", "lopt2": "peft_prompt_tuning",
         "residual_prompt_tuning": "peft_prompt_tuning", "dept": "peft_prompt_tuning", "p_tuning": "peft_p_tuning",
         "prefix_tuning": "peft_prefix_tuning", "iapt": "peft_lora_r8"}


def word_batch(backbone, batch_size: int, length: int, seed: int = 0) -> torch.Tensor:
    """(B, T) ids of common word tokens: a fixed, padding-free batch of realistic tokens."""
    pool = torch.tensor(vocab_token_ids(backbone, 2000, seed))
    g = torch.Generator().manual_seed(seed)
    return pool[torch.randint(len(pool), (batch_size, length), generator=g)]


def make_batch(backbone, batch: int, length: int):
    """The task, the kit's batch and PEFT's batch: the same (B, T) word tokens, one label word each."""
    task = Task("bench", "classification", "{text}", {}, label_words=(" negative", " positive"))
    ids = word_batch(backbone, batch, length)
    labels = torch.arange(batch) % 2
    ours = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "prompt_mask": torch.ones_like(ids),
            "labels": labels}
    label_ids = torch.tensor([s[0] for s in task.verbalizer(backbone.tokenizer).token_ids])
    peft_labels = torch.full_like(ids, -100)
    peft_ids = ids.clone()
    peft_ids[:, -1] = label_ids[labels]  # the label word is the last token, predicted from the one before
    peft_labels[:, -1] = label_ids[labels]
    return task, ours, {"input_ids": peft_ids, "attention_mask": torch.ones_like(ids), "labels": peft_labels}


def our_method(name: str, backbone, virtual: int):
    """The kit's method ``name`` as every benchmark step builds it (IAPT: m = 32; others: ``virtual`` tokens)."""
    options = dict(OURS[name])
    if name == "iapt":
        options["bottleneck"] = 32
    else:
        options["prompt_len"] = virtual
    return build_method(name, backbone, **options)


def our_step(name: str, backbone, task, batch, virtual: int):
    """(one AdamW step of the kit's method ``name`` on ``batch``, its trainable parameters)."""
    method = our_method(name, backbone, virtual)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def step():
        loss, _ = loss_and_scores(method, backbone, batch, task)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step, method.trainable_parameters()


def peft_model(name: str, backbone, virtual: int):
    from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model

    base = copy.deepcopy(backbone.model)  # PEFT wraps (LoRA even edits) the model: keep ours clean
    if name == "peft_prompt_tuning":
        config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual)
    elif name == "peft_p_tuning":  # its MLP encoder at h = d, as the kit's p_tuning
        config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual)
    elif name == "peft_prefix_tuning":
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual, prefix_projection=True,
                                    encoder_hidden_size=512)
    else:
        config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config)
    model.train()
    return model


def peft_step(name: str, backbone, batch, virtual: int):
    """(one AdamW step of the PEFT model ``name`` on ``batch``, its trainable parameters)."""
    model = peft_model(name, backbone, virtual)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_steps(backbone, args: argparse.Namespace, names):
    """Per contestant of ``names`` (keys of ``OURS`` or ``PEFT``): its step and its trainable parameters, on a
    batch of ``args.batch`` × ``args.length`` tokens with ``args.virtual`` virtual tokens."""
    task, ours, theirs = make_batch(backbone, args.batch, args.length)
    steps, params = {}, {}
    for name in names:
        if name in OURS:
            steps[name], params[name] = our_step(name, backbone, task, ours, args.virtual)
        else:
            steps[name], params[name] = peft_step(name, backbone, theirs, args.virtual)
    return steps, params
