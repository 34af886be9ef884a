"""Mixed precision: one ``precision`` setting for training, evaluation, generation and serving, really
running on CPU too (bf16 autocast), with every method held to twice the bare backbone's own bf16 error."""
import dataclasses

import pytest
import torch
from conftest import CACHEABLE, METHODS, backbone, batch_of, make, short_task

from lopt_core.evaluation.scoring import class_scores
from lopt_core.model import load_backbone
from lopt_core.serving.server import Server
from lopt_core.training.trainer import TrainConfig, Trainer


def in_bf16(bb):
    """The same frozen model, run under bf16 autocast."""
    return dataclasses.replace(bb, precision="bf16")


def log_probs(method, bb, batch, verb):
    with torch.no_grad(), bb.autocast():
        return class_scores(method, bb, batch, verb).float().log_softmax(-1)


def bf16_gap(method, bb, batch, verb) -> float:
    return (log_probs(method, bb, batch, verb) - log_probs(method, in_bf16(bb), batch, verb)).abs().max().item()


@pytest.fixture(scope="module")
def bare_gap():
    """Each tiny backbone's own bf16-vs-fp32 error on the test batch, with no method: the larger of its error on
    the text alone and on the text after a few real tokens (prompt tuning started from vocabulary rows, exactly
    the embeddings of those words). The methods run the longer input; more positions, more rounding (on
    tiny-neox's parallel residual 1.0e-3 against 5.7e-4 on the text alone)."""
    task = short_task()
    gaps = {}

    def get(bb):
        if bb.name not in gaps:
            batch, verb = batch_of(task, bb, 8), task.verbalizer(bb.tokenizer)
            gaps[bb.name] = max(bf16_gap(make("zero_shot", bb), bb, batch, verb),
                                bf16_gap(make("prompt_tuning", bb, init="vocab"), bb, batch, verb))
        return gaps[bb.name]
    return get


def test_autocast_really_runs_in_bf16_on_cpu(tiny_llama):
    """The projections run in bf16 (the values they cache show it); fp32 stays fp32."""
    bf = in_bf16(tiny_llama)
    ids = torch.tensor([[5, 6, 7]])
    with bf.autocast():
        values = bf.transformer(input_ids=ids, use_cache=True).past_key_values.layers[0].values
    assert torch.equal(values, values.bfloat16().to(values.dtype)) and bf.compute_dtype == torch.bfloat16
    with tiny_llama.autocast():
        values = tiny_llama.transformer(input_ids=ids, use_cache=True).past_key_values.layers[0].values
    assert not torch.equal(values, values.bfloat16().to(values.dtype))


@pytest.mark.parametrize("label", [m for m in METHODS if m != "zero_shot"])
def test_every_method_in_bf16_stays_within_twice_the_backbones_own_error(label, tiny, bare_gap):
    task = short_task()
    method = make(label, tiny, perturb=0.3)
    gap = bf16_gap(method, tiny, batch_of(task, tiny, 8), task.verbalizer(tiny.tokenizer))
    assert 0 < gap <= 2 * bare_gap(tiny), (gap, bare_gap(tiny))


@pytest.mark.parametrize("label", [m for m in CACHEABLE if m != "zero_shot"])
def test_served_keys_and_values_are_made_in_the_precision_requests_run_in(label, tiny, bare_gap):
    """A soft prompt's K/V come out of bf16 projections; a prefix is exactly the table the method's own
    bf16 forward puts in its cache. bf16 requests on them score as that forward does."""
    from lopt_core.evaluation.decoding import prefill

    bf = in_bf16(tiny)
    method = make(label, tiny, perturb=0.3)
    fused = ("v_proj", "c_attn", "query_key_value")  # value projections, alone or fused (Phi-3's qkv_proj ends so)
    projections = [m for name, m in tiny.model.named_modules() if name.endswith(fused)]
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype)) for m in projections]
    try:
        served = Server(bf).add(label, method, short_task()).prompt
    finally:
        for h in hooks:
            h.remove()
    if label.startswith("prefix"):
        with torch.no_grad(), bf.autocast():
            cache, _, _ = prefill(method, bf, batch_of(short_task(), tiny, 1))
        for (k, v), layer in zip(served.layers, cache.layers, strict=True):
            n = k.shape[1]
            assert torch.equal(k.float(), layer.keys[0, :, :n].float())
            assert torch.equal(v.float(), layer.values[0, :, :n].float())
    else:
        assert seen and set(seen) == {torch.bfloat16}
    server = Server(bf)
    server.add(label, method, short_task())
    task = short_task()
    rows = task.examples("train", 4)
    got = torch.tensor([list(r["probabilities"].values()) for r in
                        server.classify([(label, task.prompt(r)) for r in rows])]).log()
    own = log_probs(method, bf, task.collate(rows, tiny.tokenizer), task.verbalizer(tiny.tokenizer))
    assert (got - own).abs().max() <= 2 * bare_gap(tiny)


def test_the_loss_falls_over_20_bf16_steps():
    """Optimisation under bf16 autocast: one label for every row, which a soft prompt can learn even on a
    random model (the loss starts at log 2)."""
    bf = load_backbone("tiny-llama", device="cpu", precision="bf16")
    method = make("prompt_tuning", bf)
    task = short_task()
    task.splits = {s: [{**r, "label": 0} for r in rows] for s, rows in task.splits.items()}
    config = TrainConfig(steps=20, batch_size=4, lr=0.1, eval_every=20, eval_limit=4, progress=False)
    history = Trainer(method, bf, task, config).fit().history
    assert history["loss"].tail(5).mean() < 0.9 * history["loss"].head(5).mean(), history["loss"].tolist()
    assert method.prompt.dtype == torch.float32  # the trained parameters stay fp32; only the compute is bf16


def test_fp16_training_runs_and_scales_its_loss_where_accelerate_can():
    """Accelerate scales fp16 losses on CUDA (a GradScaler); on CPU, where it has none, fp16 still trains."""
    fp16 = dataclasses.replace(backbone("tiny-llama"), precision="fp16")
    trainer = Trainer(make("lopt1", fp16), fp16, short_task(), TrainConfig(steps=3, batch_size=4, eval_every=3,
                                                                           eval_limit=4, progress=False))
    assert trainer.accelerator.mixed_precision == "fp16"
    assert (trainer.accelerator.scaler is not None) == torch.cuda.is_available()
    history = trainer.fit().history
    assert history["loss"].notna().all() and (history["grad_norm"] > 0).all()


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of"):
        load_backbone("tiny-llama", precision="int8")
    assert load_backbone("tiny-llama", device="cpu").precision == "fp32"  # auto: fp32 on CPU
