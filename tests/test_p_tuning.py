"""P-tuning against PEFT's own PromptEncoder: the same start under the same seed, the same prompt, the same counts;
materialise(), the LSTM encoder and errors. (PEFT adapters out and in are in test_interop.py; batching, gradients,
generation and resuming on every backbone in test_contract.py.)"""
import copy

import pytest
import torch
from conftest import batch_of, short_task

from lopt_core.methods import build_method, load_method, save_method


def peft_encoder(backbone, seed, encoder="MLP", hidden=8, layers=2, n=4):
    """PEFT's own P-tuning prompt encoder for ``backbone``, built under ``torch.manual_seed(seed)``."""
    from peft import PromptEncoderConfig, get_peft_model

    config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=n, encoder_reparameterization_type=encoder,
                                 encoder_hidden_size=hidden, encoder_num_layers=layers)
    torch.manual_seed(seed)
    return get_peft_model(copy.deepcopy(backbone.model), config).prompt_encoder["default"]


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_the_start_and_the_prompt_are_pefts_under_the_same_seed(encoder, tiny_llama):
    """Same parameters, in PEFT's order from the same seed; the same prompt from PEFT's forward."""
    theirs = peft_encoder(tiny_llama, seed=11, encoder=encoder.upper())
    ours = build_method("p_tuning", tiny_llama, prompt_len=4, encoder=encoder, encoder_hidden_size=8, seed=11)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    with torch.no_grad():
        prompt = theirs(torch.arange(4).unsqueeze(0))[0]  # what PEFT prepends (and saves)
    torch.testing.assert_close(ours.input_prompt().detach(), prompt, atol=1e-6, rtol=1e-5)
    assert ours.trainable_parameters() == ours.parameter_formula() == (
        sum(p.numel() for p in theirs.parameters()))


def test_materialise_keeps_the_prompt_and_drops_the_encoder_exactly(tiny, tmp_path):
    method = build_method("p_tuning", tiny, prompt_len=4, encoder_hidden_size=8, seed=1)
    batch = batch_of(short_task(), tiny)
    prompt, before = method.input_prompt().detach().clone(), method.hidden_states(tiny, batch)
    assert method.materialise() is method
    assert not hasattr(method, "embedding") and not hasattr(method, "mlp_head") and method.config.reparam is False
    assert method.trainable_parameters() == method.stored_parameters() == 4 * tiny.hidden_size
    assert torch.equal(method.input_prompt(), prompt)
    assert torch.equal(method.hidden_states(tiny, batch), before)
    save_method(method, tmp_path, tiny.name)
    assert torch.equal(load_method(tmp_path, tiny).hidden_states(tiny, batch), before)


def test_the_lstm_reads_the_rows_as_one_sequence(tiny_llama):
    """The bidirectional LSTM mixes the rows: changing E's last row changes the first row of X (the MLP would not)."""
    lstm = build_method("p_tuning", tiny_llama, prompt_len=4, encoder="lstm", encoder_hidden_size=8)
    mlp = build_method("p_tuning", tiny_llama, prompt_len=4, encoder_hidden_size=8)
    for method, mixes in ((lstm, True), (mlp, False)):
        before = method.input_prompt().detach().clone()
        with torch.no_grad():
            method.embedding.weight[-1] += 1.0
        after = method.input_prompt().detach()
        assert (not torch.equal(after[0], before[0])) is mixes
        assert not torch.equal(after[-1], before[-1])


@pytest.mark.parametrize(("options", "message"), [({"encoder": "gru"}, "encoder must be one of"),
                                                  ({"encoder_hidden_size": 0}, "encoder_hidden_size must be"),
                                                  ({"encoder_num_layers": 0}, "encoder_num_layers must be"),
                                                  ({"encoder_dropout": 1.0}, r"encoder_dropout must be in \[0, 1\)")])
def test_bad_options_are_refused_clearly(options, message, tiny_llama):
    with pytest.raises(ValueError, match=message):
        build_method("p_tuning", tiny_llama, prompt_len=4, **options)
