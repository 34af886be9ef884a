"""PEFT adapters out and in, and prompt embeddings for serving engines, against PEFT and plain transformers."""
import copy
import dataclasses
import json

import pytest
import torch
from conftest import METHODS, backbone, make
from safetensors.torch import load_file, save_file

from lopt_core.data.batching import pad
from lopt_core.data.task import Task
from lopt_core.evaluation.scoring import class_scores
from lopt_core.methods.base import adds_bos
from lopt_core.model import TINY_SPECS
from lopt_core.serving.interop import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    SIDECAR,
    export_embeddings,
    from_peft,
    load_embeddings,
    peft_config,
    prompt_embeddings,
    read_sidecar,
    to_peft,
)

EXPORTABLE = ["prompt_tuning", "lopt1", "lopt2", "residual_pt", "p_tuning", "prefix_tuning", "prefix_tuning_raw"]
TEXTS = ["a fine film =", "no =", "loved every minute of it ="]
# PEFT runs the same operations on the same tensors: its logits equal the kit's to fp32 rounding
ATOL, RTOL = 1e-5, 1e-4


def batch_of(bb, texts=TEXTS, bos=True):
    """Right-padded ids and mask; ``bos=False`` drops the BOS a tokenizer adds (what PEFT gets for exports
    whose virtual token 0 is E(BOS))."""
    seqs = [bb.tokenizer(t)["input_ids"] for t in texts]
    if not bos:
        seqs = [s[1:] if adds_bos(bb) else s for s in seqs]
    ids, mask = pad(seqs, bb.tokenizer.pad_token_id)
    return {"input_ids": ids, "attention_mask": mask}


def peft_model(bb, folder):
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(bb.model), folder).eval()  # a copy: PEFT wraps what it gets


def kit_and_peft_logits(method, bb, folder):
    """The kit's logits at the batch's tokens and PEFT's at the same tokens (its virtual tokens dropped)."""
    batch = batch_of(bb)
    with torch.no_grad():
        kit = bb.logits(method.hidden_states(bb, batch))  # (B, T, V)
        sidecar = read_sidecar(folder)
        peft_in = batch_of(bb, bos=not sidecar["bos_row"])
        out = peft_model(bb, folder)(**peft_in).logits
    if method.prompt_kind == "input":  # PEFT: [virtual tokens; text]; with the BOS row, E(BOS) is virtual token 0
        n = out.shape[1] - peft_in["input_ids"].shape[1]
        out = torch.cat([out[:, :1], out[:, n:]], dim=1) if sidecar["bos_row"] else out[:, n:]
    return kit, out, batch["attention_mask"].bool()


@pytest.mark.parametrize("label", EXPORTABLE)
def test_peft_loads_the_export_and_computes_the_kits_logits(tiny, label, tmp_path):
    method = make(label, tiny, perturb=0.05)
    to_peft(method, tiny, tmp_path)
    kit, peft, real = kit_and_peft_logits(method, tiny, tmp_path)
    torch.testing.assert_close(peft[real], kit[real], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("label", EXPORTABLE)
def test_the_export_is_what_peft_itself_saves(tiny_llama, label, tmp_path):
    """Same files, keys, shapes, values and config fields as PEFT's own save_pretrained for the same adapter (PEFT
    saves a P-tuning encoder's output: it gets the kit's encoder; the others, the kit's prompt as its table)."""
    from peft import get_peft_model

    method = make(label, tiny_llama, perturb=0.05)
    to_peft(method, tiny_llama, tmp_path / "kit")
    ours = load_file(str(tmp_path / "kit" / ADAPTER_WEIGHTS))
    config = dataclasses.replace(peft_config(method, tiny_llama, ours["prompt_embeddings"].shape[0]),
                                 inference_mode=False)
    model = get_peft_model(copy.deepcopy(tiny_llama.model), config)
    encoder = model.prompt_encoder["default"]
    with torch.no_grad():
        if method.peft_type == "P_TUNING":
            encoder.load_state_dict(method.state_dict())
        else:
            encoder.embedding.weight.copy_(ours["prompt_embeddings"])
    model.save_pretrained(tmp_path / "peft")
    theirs = load_file(str(tmp_path / "peft" / ADAPTER_WEIGHTS))
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert torch.equal(ours["prompt_embeddings"], theirs["prompt_embeddings"])
    mine, peft_json = (json.loads((tmp_path / d / ADAPTER_CONFIG).read_text()) for d in ("kit", "peft"))
    assert mine.pop("base_model_name_or_path") == "tiny-llama"  # PEFT writes the model's name_or_path (None here)
    peft_json.pop("base_model_name_or_path")
    assert mine == peft_json


def test_fields_of_the_configs(tmp_path):
    """The fields the issue names, as PEFT 0.21.2 sizes them (grouped-query attention: by the K/V heads)."""
    bb = backbone("tiny-qwen2")
    to_peft(make("prompt_tuning", bb), bb, tmp_path / "pt")
    pt = json.loads((tmp_path / "pt" / ADAPTER_CONFIG).read_text())
    assert (pt["peft_type"], pt["task_type"], pt["num_virtual_tokens"], pt["token_dim"], pt["num_layers"],
            pt["num_attention_heads"], pt["num_transformer_submodules"], pt["prompt_tuning_init"]) == (
        "PROMPT_TUNING", "CAUSAL_LM", 5, bb.hidden_size, bb.num_layers, bb.num_heads, 1, "RANDOM")
    to_peft(make("prefix_tuning", bb), bb, tmp_path / "prefix")
    pre = json.loads((tmp_path / "prefix" / ADAPTER_CONFIG).read_text())
    assert bb.num_kv_heads < bb.num_heads  # grouped-query attention
    assert (pre["peft_type"], pre["prefix_projection"], pre["token_dim"], pre["num_attention_heads"]) == (
        "PREFIX_TUNING", False, bb.num_kv_heads * bb.head_dim, bb.num_kv_heads)
    table = load_file(str(tmp_path / "prefix" / ADAPTER_WEIGHTS))["prompt_embeddings"]
    assert table.shape == (5, bb.num_layers * 2 * bb.num_kv_heads * bb.head_dim)


def test_bos_tokenizers_get_a_bos_row_and_inputs_go_in_without_bos(tmp_path):
    bb = backbone("tiny-llama-bos")
    method = make("lopt1", bb, perturb=0.05)
    to_peft(method, bb, tmp_path)
    X = load_file(str(tmp_path / ADAPTER_WEIGHTS))["prompt_embeddings"]
    bos = bb.embed(torch.tensor([bb.tokenizer.bos_token_id]))
    assert X.shape[0] == method.config.prompt_len + 1 and torch.equal(X[:1], bos)
    assert read_sidecar(tmp_path)["bos_row"] is True
    # with BOS added anyway, PEFT computes [E(BOS); X; BOS; text]: not the kit's (docs/interop.md gives the gap)
    batch = batch_of(bb)
    with torch.no_grad():
        kit = bb.logits(method.hidden_states(bb, batch))[:, -1]
        anyway = peft_model(bb, tmp_path)(**batch).logits[:, -1]
    assert (anyway - kit).abs().max() > 1e-3


@pytest.mark.parametrize("label", EXPORTABLE)
def test_round_trip_through_peft_is_exact(tiny, label, tmp_path):
    method = make(label, tiny, perturb=0.05)
    to_peft(method, tiny, tmp_path, task="sentiment")
    back = from_peft(tmp_path, tiny)
    expected = {"PROMPT_TUNING": "prompt_tuning", "P_TUNING": "p_tuning", "PREFIX_TUNING": "prefix_tuning"}
    assert back.name == expected[method.peft_type]  # LoPT comes back as its materialised prompt, an MLP prefix as its
    # table, P-tuning as its encoder's output (p_tuning materialised: all PEFT saves)
    assert torch.equal(prompt_embeddings(back), prompt_embeddings(method))
    batch = batch_of(tiny)
    with torch.no_grad():
        torch.testing.assert_close(back.hidden_states(tiny, batch), method.hidden_states(tiny, batch),
                                   atol=0, rtol=0)
    side = read_sidecar(tmp_path)
    assert (side["method"], side["task"], side["config"]) == (METHODS[label][0], "sentiment",
                                                              method.config.to_dict())


def test_a_peft_prefix_saved_with_its_projection_comes_back_as_its_table(tiny_llama, tmp_path):
    from peft import PrefixTuningConfig, get_peft_model

    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, prefix_projection=True,
                                encoder_hidden_size=16)
    model = get_peft_model(copy.deepcopy(tiny_llama.model), config)
    model.save_pretrained(tmp_path)
    method = from_peft(tmp_path, tiny_llama)
    saved = load_file(str(tmp_path / ADAPTER_WEIGHTS))["prompt_embeddings"]
    assert method.name == "prefix_tuning" and not method.config.reparam
    assert torch.equal(method.kv_table().detach(), saved)
    batch = batch_of(tiny_llama)
    with torch.no_grad():
        kit = tiny_llama.logits(method.hidden_states(tiny_llama, batch))
        peft = peft_model(tiny_llama, tmp_path)(**batch).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(peft[real], kit[real], atol=ATOL, rtol=RTOL)


def test_what_cannot_be_exported_or_imported_says_why(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="iapt has no fixed prompt to export and no PEFT equivalent"):
        to_peft(make("iapt", tiny_llama), tiny_llama, tmp_path / "iapt")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match=r"not a PEFT adapter: it has no adapter_config.json \(found: readme.txt\)"):
        from_peft(tmp_path / "notes", tiny_llama)
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(tiny_llama.model), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    with pytest.raises(ValueError, match="a LORA adapter; the kit imports PROMPT_TUNING, P_TUNING, PREFIX_TUNING"):
        from_peft(tmp_path / "lora", tiny_llama)
    to_peft(make("prompt_tuning", tiny_llama), tiny_llama, tmp_path / "pt")
    save_file({"prompt_embeddings": torch.zeros(5, 32)}, str(tmp_path / "pt" / ADAPTER_WEIGHTS))  # d = 32
    with pytest.raises(ValueError, match="width 32 but tiny-llama has d = 64: it was trained for another backbone"):
        from_peft(tmp_path / "pt", tiny_llama)


@pytest.mark.parametrize("spec", TINY_SPECS)
@pytest.mark.parametrize("label", ["prompt_tuning", "lopt2"])
def test_prompt_embeddings_for_serving_engines_score_as_the_kit(spec, label, tmp_path):
    """What vLLM's prompt_embeds and llama.cpp's batch.embd do: plain transformers on [E(BOS)]? [X] [E(tokens)]."""
    bb = backbone(spec)
    method = make(label, bb, perturb=0.05)
    export_embeddings(method, bb, tmp_path, task="sentiment")
    X, info = load_embeddings(tmp_path)
    assert info["n"] == X.shape[0] and info["dtype"] == "fp32" and info["position"] in ("first", "after_bos")
    task = Task("t", "classification", "{text} =", {}, label_words=(" a", " b"))
    rows = [{"text": t, "label": 0} for t in ("a fine film", "no", "loved every minute of it")]
    batch = task.collate(rows, bb.tokenizer)
    verbalizer = task.verbalizer(bb.tokenizer)
    with torch.no_grad():
        ours = class_scores(method, bb, batch, verbalizer).log_softmax(-1)
        scores = []
        for row in rows:  # one request at a time, as an engine receives them
            ids = bb.tokenizer(task.prompt(row))["input_ids"]
            head, ids = (ids[:1], ids[1:]) if info["position"] == "after_bos" else ([], ids)
            per_class = []
            for word in verbalizer.token_ids:
                seq = torch.tensor(ids + list(word))
                first = bb.embed(torch.tensor(head, dtype=torch.long))  # E(BOS), or nothing
                embeds = torch.cat([first, X, bb.embed(seq)])[None]  # (1, n+T, d)
                logp = bb.model(inputs_embeds=embeds).logits[0].log_softmax(-1)
                start = len(head) + X.shape[0] + len(ids) - 1  # the position that predicts the word's first token
                per_class.append(sum(logp[start + j, t] for j, t in enumerate(word)))
            scores.append(torch.stack(per_class))
        theirs = torch.stack(scores).log_softmax(-1)
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=RTOL)


def test_embeddings_refuse_what_engines_cannot_take(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="prompt_embeds cannot carry it; export --format peft"):
        export_embeddings(make("prefix_tuning", tiny_llama), tiny_llama, tmp_path)
    export_embeddings(make("prompt_tuning", tiny_llama), tiny_llama, tmp_path, dtype="bf16")
    X, info = load_embeddings(tmp_path)
    assert X.dtype == torch.bfloat16 and info["dtype"] == "bf16"


def test_sidecar_is_written_beside_the_adapter(tiny_llama, tmp_path):
    to_peft(make("lopt1", tiny_llama), tiny_llama, tmp_path, task="sentiment")
    assert {p.name for p in tmp_path.iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS, SIDECAR}
    assert read_sidecar(tmp_path)["config"]["rank"] == 2


def test_an_imported_adapter_is_a_kit_method_for_analysis_the_slider_and_serving(tmp_path):
    from conftest import short_task

    from lopt_core import analysis
    from lopt_core.evaluation.evaluator import evaluate
    from lopt_core.lab.widgets import rank_slider
    from lopt_core.serving.server import Server

    bb, task = backbone("tiny-llama-bos"), short_task()
    method = make("lopt2", bb, perturb=0.05, residual=False)  # the paper's σ(X0 U) V: X itself has rank ≤ r
    to_peft(method, bb, tmp_path)
    back = from_peft(tmp_path, bb)
    assert evaluate(back, bb, task, "validation") == evaluate(method, bb, task, "validation")
    s = analysis.singular_values(back.input_prompt())
    assert len(s) == method.config.prompt_len and analysis.effective_rank(s) <= 2  # LoPT-2's X has rank ≤ r
    cut = analysis.truncate_method(back, 2, bb)
    torch.testing.assert_close(cut.input_prompt(), back.input_prompt(), atol=1e-5, rtol=1e-4)
    slider = rank_slider(back, bb, task, limit=4)
    assert slider.score(2) == evaluate(cut, bb, task, "validation", limit=4)
    server = Server(bb)
    server.add("imported", back, task)
    server.add("original", method, task)
    prompt = task.prompt(task.examples("validation", 1)[0])
    a, b = server.classify([("imported", prompt), ("original", prompt)])
    assert a["label"] == b["label"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_cli_export_then_import_gives_back_the_same_run(tmp_path, capsys):
    from lopt_core.cli import main

    run = tmp_path / "run"
    assert main(["train", "--method", "lopt1", "--task", "sentiment", "--backbone", "tiny-llama-bos", "--rank", "2",
                 "--prompt-len", "5", "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--eval-limit", "8",
                 "--final-eval-limit", "8", "--train-limit", "16", "--no-progress", "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "peft", "--out", str(tmp_path / "adapter")]) == 0
    assert "feed inputs without BOS" in capsys.readouterr().out
    assert main(["import-peft", str(tmp_path / "adapter"), "--out", str(tmp_path / "back")]) == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (config["method"], config["task"], config["imported_from"]["kit"]["method"]) == (
        "prompt_tuning", "sentiment", "lopt1")
    for folder in (run, tmp_path / "back"):
        assert main(["evaluate", str(folder), "--split", "test", "--limit", "8"]) == 0
    scores = [json.loads((f / "evaluate-test.json").read_text())["test"] for f in (run, tmp_path / "back")]
    assert scores[0] == scores[1]
    assert main(["export", str(run), "--format", "embeddings", "--dtype", "fp16", "--out", str(tmp_path / "emb")]) == 0
    assert "[E(BOS); X; E(tokens without BOS)]" in capsys.readouterr().out
    assert main(["import-peft", str(tmp_path / "emb"), "--out", str(tmp_path / "bad"), "--task", "sentiment",
                 "--backbone", "tiny-llama-bos"]) == 2
    assert "is not a PEFT adapter: it has no adapter_config.json (found: prompt_embeds.json" in capsys.readouterr().err


def test_loading_an_export_through_peft_prints_no_deprecation(tiny_llama, tmp_path):
    """PEFT's PeftModel asks the model for ``is_gradient_checkpointing``, which transformers deprecates: every load
    printed a FutureWarning into lesson 07. Importing the kit's interop silences that one message, nothing else."""
    import importlib
    import warnings

    import lopt_core.serving.interop as interop

    to_peft(make("prompt_tuning", tiny_llama), tiny_llama, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(interop)  # its filter, installed as an import installs it (on top of "always")
        peft_model(tiny_llama, tmp_path)
        warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
    said = [str(w.message) for w in caught]
    assert not any("is_gradient_checkpointing" in text for text in said), said
    assert "another FutureWarning" in said
