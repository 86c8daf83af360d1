import copy

import pytest
import torch

from conftest import padded_batch, tiny_config
from sasa import SasaForMaskedLM, SasaForSequenceClassification, SasaModel, modeling_sasa, sparse_attention


def build(config, backend="eager", cls=SasaModel, seed=0):
    torch.manual_seed(seed)
    return cls._from_config(copy.deepcopy(config), attn_implementation=backend)  # backend None: the default


def structured_inputs(lengths, config, seed=0):
    input_ids, attention_mask = padded_batch(lengths, config.vocab_size, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    ast_links = torch.randint(-1, max(lengths), (len(lengths), max(lengths), 2), generator=generator)
    return dict(input_ids=input_ids, attention_mask=attention_mask, ast_links=ast_links)


def with_frequency_table(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    model.base_model.set_frequency_table(
        torch.randint(0, vocab, (vocab, 3), generator=generator), torch.rand(vocab, 3, generator=generator)
    )
    return model


def test_the_backend_can_be_switched_after_loading(config):
    model = build(config, "sasa_blocks").eval()
    inputs = structured_inputs([45, 30], config)
    with torch.no_grad():
        sparse = model(**inputs).last_hidden_state
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        dense = model(**inputs, output_attentions=True)  # only the eager reference returns probabilities
    assert dense.attentions is not None
    torch.testing.assert_close(dense.last_hidden_state, sparse, atol=1e-5, rtol=1e-5)


def test_links_from_padding_tokens_are_ignored(config):
    """Collators may pad ast_links with any index (pipelines pad with 0): padding tokens link nothing."""
    model = build(config, "sasa_blocks").eval()
    inputs = structured_inputs([45, 30], config)
    padded = inputs["ast_links"].clone()
    padded[1, 30:] = 9  # padding that links to a real token outside the window of blocks 3-5 (block 1)
    inputs["ast_links"][1, 30:] = -1
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
        got = model(**dict(inputs, ast_links=padded)).last_hidden_state
    assert torch.equal(got, expected)


def test_default_backend_is_chosen_per_device(config):
    """The default, "sasa_auto", runs the block-sparse kernel on the CPU (no FlexAttention there)."""
    model = SasaModel(config)
    assert model.config._attn_implementation == "sasa_auto"
    inputs = structured_inputs([45, 30], config)
    with torch.no_grad():
        auto = model.eval()(**inputs).last_hidden_state
        model.set_attn_implementation("sasa_blocks")
        blocks = model(**inputs).last_hidden_state
    assert torch.equal(auto, blocks)


def test_kernels_that_cannot_express_the_layout_are_refused(config):
    with pytest.raises(ValueError, match="sasa_blocks"):
        SasaModel._from_config(copy.deepcopy(config), attn_implementation="flash_attention_2")


@pytest.mark.parametrize("backend", ["sdpa", "sasa_blocks"])
def test_model_backends_equal_eager_outputs(backend):
    config = tiny_config(num_random_blocks=1)  # random blocks are drawn from a fixed seed in eval
    inputs = structured_inputs([77, 50, 23], config)  # lengths that are not multiples of the block size
    real = inputs["attention_mask"].bool()
    models = [with_frequency_table(build(config, name)).eval() for name in ("eager", backend)]
    with torch.no_grad():
        expected, actual = (m(**inputs, output_hidden_states=True) for m in models)
    assert (actual.last_hidden_state - expected.last_hidden_state)[real].abs().max() <= 1e-5
    assert len(actual.hidden_states) == config.num_hidden_layers + 1


@pytest.mark.parametrize("backend", ["sdpa", "sasa_blocks"])
def test_model_backends_equal_eager_gradients(backend):
    config = tiny_config()
    inputs = structured_inputs([77, 50, 23], config)
    real = inputs["attention_mask"].bool()
    models = [with_frequency_table(build(config, name)).train() for name in ("eager", backend)]
    for model in models:
        model(**inputs).last_hidden_state[real].pow(2).mean().backward()
    compared = 0
    for (name, p_ref), (_, p) in zip(models[0].named_parameters(), models[1].named_parameters()):
        if p_ref.grad is not None:
            assert (p.grad - p_ref.grad).abs().max() <= 1e-5, name
            compared += 1
    assert compared > 10


# FlexAttention cases: SASA block sizes (the BlockMask runs at 128-token tiles) at distinct padded lengths, which
# each compile once (static shapes). head_dim 16: the GPU kernel's minimum, so "sasa_auto" may choose flex.
FLEX_CASES = [(32, [200, 90]), (64, [300, 100]), (128, [77, 40])]


def flex_config(block_size, **overrides):
    return tiny_config(block_size=block_size, hidden_size=64, num_attention_heads=4, num_hidden_layers=1,
                       intermediate_size=64, **overrides)


@pytest.mark.slow
def test_flex_attention_equals_eager_at_block_sizes_and_lengths_on_cpu():
    """One compiled FlexAttention serves every length (torch 2.13's dynamic-shape CPU kernel failed to compile at
    the second one) and every SASA block size, with real AST links and a frequency table."""
    for block_size, lengths in FLEX_CASES:
        config = flex_config(block_size)
        inputs = structured_inputs(lengths, config)
        real = inputs["attention_mask"].bool()
        models = [with_frequency_table(build(config, name)).eval() for name in ("eager", "sasa_blocks", "flex_attention")]
        with torch.no_grad():
            expected, blocks, flex = (m(**inputs).last_hidden_state for m in models)
        assert (flex - expected)[real].abs().max() <= 1e-5, block_size
        assert (flex - blocks)[real].abs().max() <= 1e-5, block_size
    # Lengths in a length bucket already compiled reuse its kernel, padded to it or not: no recompilation.
    from torch._dynamo.utils import counters

    compiled = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        for lengths in ([100, 60], [128, 1]):  # block 128: the bucket of [77, 40], 128 tokens at batch 2
            models[2](**structured_inputs(lengths, config))
        flex = build(flex_config(32), "flex_attention").eval()
        for lengths in ([256, 10], [230, 100]):  # block 32: the bucket of [200, 90], 256 tokens, unpadded and padded
            flex(**structured_inputs(lengths, flex.config))
    assert counters["stats"]["unique_graphs"] == compiled


@pytest.mark.slow
def test_flex_attention_with_attention_dropout_warns_and_runs_without_it():
    """The default attention_probs_dropout_prob=0.1 does not fail a training step with FlexAttention (transformers'
    flex raises): it warns once and attends without attention dropout. (CPU: no flex backward, so under no_grad.)"""
    block_size, lengths = FLEX_CASES[-1]
    config = flex_config(block_size, attention_probs_dropout_prob=0.1)
    model = with_frequency_table(build(config, "flex_attention"))
    inputs = structured_inputs(lengths, config)
    real = inputs["attention_mask"].bool()
    sparse_attention._warned.clear()
    with torch.no_grad(), pytest.warns(UserWarning, match="cannot apply attention dropout"):
        trained = model.train()(**inputs).last_hidden_state
    with torch.no_grad():
        evaluated = model.eval()(**inputs).last_hidden_state
    assert torch.equal(trained[real], evaluated[real])


@pytest.mark.slow
def test_auto_backend_runs_flex_where_gpus_would_and_keeps_dropout_training_on_sasa_blocks(monkeypatch):
    """"sasa_auto" (the default) on a FlexAttention device, emulated on the CPU: flex in eval (equal to eager), and
    "sasa_blocks" when training with attention dropout, which FlexAttention cannot apply."""
    monkeypatch.setattr(sparse_attention, "FLEX_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(sparse_attention, "_triton_available", lambda: True)
    calls = []
    flex_forward = sparse_attention.sasa_flex_attention_forward
    monkeypatch.setattr(modeling_sasa, "sasa_flex_attention_forward", lambda *a, **k: calls.append(1) or flex_forward(*a, **k))
    block_size, lengths = FLEX_CASES[-1]
    config = flex_config(block_size, attention_probs_dropout_prob=0.1)
    inputs = structured_inputs(lengths, config)
    real = inputs["attention_mask"].bool()
    auto, eager = (with_frequency_table(build(config, name)) for name in (None, "eager"))
    assert auto.config._attn_implementation == "sasa_auto"
    with torch.no_grad():
        expected = eager.eval()(**inputs).last_hidden_state
        actual = auto.eval()(**inputs).last_hidden_state
    assert calls and (actual - expected)[real].abs().max() <= 1e-5
    calls.clear()
    auto.train()(**inputs).last_hidden_state.sum().backward()  # sasa_blocks: gradients, attention dropout on
    assert not calls


def test_flex_attention_training_on_cpu_is_a_clear_error(config):
    model = build(config, "flex_attention").train()
    with pytest.raises(NotImplementedError, match="no backward"):
        model(**structured_inputs([20], config))


def test_ast_links_and_frequency_table_change_the_layout(config):
    model = build(config).eval()
    inputs = structured_inputs([96], config)
    plain = model.layout(inputs["input_ids"], inputs["attention_mask"])
    with_ast = model.layout(inputs["input_ids"], inputs["attention_mask"], inputs["ast_links"])
    assert with_ast.block_mask.sum() > plain.block_mask.sum()
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).last_hidden_state,
                                  model(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state)


def test_frequency_table_selects_the_blocks_its_counts_favour():
    config = tiny_config(num_ast_blocks=0, num_topk_blocks=1)
    model = build(config).eval()
    partner_ids = torch.zeros(config.vocab_size, 1, dtype=torch.long)
    partner_weights = torch.zeros(config.vocab_size, 1)
    partner_ids[7, 0], partner_weights[7, 0] = 9, 5.0  # token 7 attends to token 9
    model.set_frequency_table(partner_ids, partner_weights)
    input_ids = torch.full((1, 96), 20)
    input_ids[0, 3], input_ids[0, 90] = 7, 9  # block 0 .. block 11
    input_ids[0, 50] = 7  # block 6 also holds a 7
    layout = model.layout(input_ids)
    assert layout.block_mask[0, 6, 11]  # chosen by the table, far outside the window
    assert layout.block_mask[0, 6].sum() == 3 + 1 + 1


def test_activation_checkpointing_gives_the_same_gradients(config):
    inputs = structured_inputs([70, 45], config)
    grads = []
    for checkpointing in (False, True):
        model = with_frequency_table(build(config, "sasa_blocks", SasaForSequenceClassification)).train()
        if checkpointing:
            # The README's call (transformers >= 5.23); its older name before that (a deprecated alias since)
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
            assert model.sasa.encoder.layer[0].gradient_checkpointing
        model(**inputs, labels=torch.tensor([0, 1])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6)


def test_inputs_embeds_equal_input_ids(config):
    model = build(config, "sasa_blocks").eval()
    inputs = structured_inputs([30], config)
    with torch.no_grad():
        from_ids = model(**inputs).last_hidden_state
        embeds = model.embeddings.word_embeddings(inputs["input_ids"])
        from_embeds = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                            ast_links=inputs["ast_links"]).last_hidden_state
    torch.testing.assert_close(from_embeds, from_ids)


def test_bad_inputs_are_clear_errors(config):
    model = build(config, "sasa_blocks")
    ids = torch.full((1, config.max_sequence_length + 1), 5)
    with pytest.raises(ValueError, match="position table"):
        model(ids)
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="ast_links"):
        model(torch.full((1, 10), 5), ast_links=torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="eager"):
        model(torch.full((1, 10), 5), output_attentions=True)


@pytest.mark.parametrize("value", [10**6, 30, -5, -2])
def test_ast_links_out_of_range_name_the_position_and_value(config, value):
    model = build(config, "sasa_blocks")
    links = torch.full((2, 30, 2), -1)
    links[1, 7, 1] = value  # a token index must lie in [-1, 30)
    with pytest.raises(ValueError, match=rf"ast_links\[1, 7, 1\] = {value} is outside \[-1, 30\)"):
        model(torch.full((2, 30), 5), ast_links=links)
    links_2d = torch.full((2, 30), -1)
    links_2d[0, 3] = value
    with pytest.raises(ValueError, match=rf"ast_links\[0, 3, 0\] = {value}"):
        model(torch.full((2, 30), 5), ast_links=links_2d)


@pytest.mark.parametrize(("links", "message"), [
    (torch.zeros(1, 10, 2), "integer tensor.*got dtype torch.float32"),
    (torch.zeros(1, 10, 2, dtype=torch.bool), "integer tensor.*got dtype torch.bool"),
    (torch.zeros(1, 10, 2, 1, dtype=torch.long), r"shape \[batch, length\] = \[1, 10\].*got \[1, 10, 2, 1\]"),
    (torch.zeros(1, 9, dtype=torch.long), r"got \[1, 9\]"),
    ([[0] * 10], "torch.Tensor.*got list"),
])
def test_ast_links_of_the_wrong_type_or_shape_say_what_is_expected(config, links, message):
    model = build(config, "sasa_blocks")
    with pytest.raises(ValueError, match=message):
        model(torch.full((1, 10), 5), ast_links=links)


def test_ast_links_of_any_integer_dtype_are_accepted(config):
    model = build(config, "sasa_blocks").eval()
    inputs = structured_inputs([30], config)
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
        as_int32 = model(**dict(inputs, ast_links=inputs["ast_links"].int())).last_hidden_state
    assert torch.equal(as_int32, expected)


def test_eager_returns_sparse_attention_probabilities(config):
    model = build(config, "eager").eval()
    inputs = structured_inputs([50], config)
    with torch.no_grad():
        attentions = model(inputs["input_ids"], inputs["attention_mask"], output_attentions=True).attentions
    assert len(attentions) == config.num_hidden_layers and attentions[0].shape == (1, 4, 50, 50)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(1, 4, 50))
    layout = model.layout(inputs["input_ids"], inputs["attention_mask"])
    assert attentions[0][0, 0][~layout.token_mask()[0, :50, :50]].eq(0).all()


def test_masked_lm_ties_weights_and_computes_a_loss(config):
    model = build(config, "sasa_blocks", SasaForMaskedLM)
    assert model.lm_head.decoder.weight is model.sasa.embeddings.word_embeddings.weight
    inputs = structured_inputs([40, 33], config)
    labels = inputs["input_ids"].masked_fill(~inputs["attention_mask"].bool(), -100)
    output = model(**inputs, labels=labels)
    assert output.logits.shape == (2, 40, config.vocab_size) and torch.isfinite(output.loss)
    output.loss.backward()
    loss, logits = model(**inputs, labels=labels, return_dict=False)[:2]
    torch.testing.assert_close(logits, output.logits)


@pytest.mark.parametrize(
    ("num_labels", "labels", "problem_type"),
    [(2, torch.tensor([0, 1]), "single_label_classification"), (1, torch.tensor([0.5, -1.0]), "regression"),
     (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multi_label_classification")],
)
def test_sequence_classification_losses(num_labels, labels, problem_type):
    model = build(tiny_config(num_labels=num_labels), "sasa_blocks", SasaForSequenceClassification)
    output = model(**structured_inputs([40, 33], model.config), labels=labels)
    assert output.logits.shape == (2, num_labels) and torch.isfinite(output.loss)
    assert model.config.problem_type == problem_type
    assert model.accepts_loss_kwargs is False  # so Trainer scales the loss under gradient accumulation


def test_the_default_top_k_block_is_filled_from_the_input_alone():
    """No frequency table, no tokenizer: the default top-k source matches the tokens blocks share."""
    config = tiny_config(num_ast_blocks=0, num_topk_blocks=1)
    assert config.topk_source == "input" and config.frequency_partners == 0
    model = build(config).eval()
    input_ids = torch.full((1, 96), 20)
    input_ids[0, 0] = 0
    input_ids[0, 3::9] = torch.arange(30, 41)  # distinct names, each once...
    input_ids[0, 50], input_ids[0, 90] = 77, 77  # ...and one used in block 6 and block 11 (blocks of 8)
    layout = model.layout(input_ids)
    topk = layout.sources[0] == 3
    assert topk[6].nonzero().flatten().tolist() == [11] and topk[11].nonzero().flatten().tolist() == [6]


def test_a_top_k_budget_nothing_can_fill_is_a_warning_once(caplog):
    from transformers.utils import logging as hf_logging

    config = tiny_config(num_ast_blocks=0, num_topk_blocks=2, topk_source="table")
    model = build(config).eval()
    input_ids, attention_mask = padded_batch([64], config.vocab_size)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            first = model.layout(input_ids, attention_mask)
            model.layout(input_ids, attention_mask)
    finally:
        hf_logging.disable_propagation()
    warnings = [r for r in caplog.records if "no frequency table is installed" in r.getMessage()]
    assert len(warnings) == 1
    assert not (first.sources == 3).any()


def test_resizing_the_vocabulary_resizes_the_top_k_source():
    config = tiny_config(num_ast_blocks=0, num_topk_blocks=1)
    model = with_frequency_table(build(config, "sasa_blocks", SasaForMaskedLM)).eval()
    model.resize_token_embeddings(config.vocab_size + 8, mean_resizing=False)
    table = model.sasa.frequency_table
    assert table.partner_ids.shape[0] == table.partner_weights.shape[0] == table.matchable_tokens.shape[0] == 128
    input_ids, attention_mask = padded_batch([40], 128)
    input_ids[0, 5:9] = torch.arange(120, 124)  # the new ids
    with torch.no_grad():
        assert torch.isfinite(model(input_ids, attention_mask).logits).all()
    model.resize_token_embeddings(100, mean_resizing=False)
    assert table.partner_ids.shape[0] == model.sasa.frequency_table.matchable_tokens.shape[0] == 100


AUTOCAST_LAYOUT = """
import torch
from sasa import SasaConfig, SasaModel
from sasa.block_layout import build_layout, frequency_block_scores

generator = torch.Generator().manual_seed(0)
config = SasaConfig(vocab_size=500, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                    max_position_embeddings=1026, block_size=8, num_topk_blocks=3, num_ast_blocks=0)
input_ids = torch.randint(3, 60, (2, 1024), generator=generator)
for source in ("input", "table"):
    model = SasaModel(config).eval()
    if source == "table":
        model.set_frequency_table(torch.randint(3, 60, (500, 8), generator=generator),
                                  torch.rand(500, 8, generator=generator))
    fp32 = model.layout(input_ids).block_mask
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.layout(input_ids).block_mask
    assert torch.equal(fp32, bf16), (source, int((fp32 != bf16).sum()))
# The same scores computed under autocast, without the layout's fp32 guard, choose other blocks: the check bites.
table = model.frequency_table
with torch.autocast("cpu", dtype=torch.bfloat16):
    unguarded = frequency_block_scores(input_ids, table.partner_ids, table.partner_weights, 8)
mask = torch.ones_like(input_ids, dtype=torch.bool)
rounded = build_layout(mask, 8, num_topk_blocks=3, topk_scores=unguarded).block_mask
assert not torch.equal(rounded, fp32)
print("ok")
"""


def test_bf16_autocast_builds_the_same_layout_as_fp32():
    """Training under --bf16 and evaluating in fp32 attend to the same blocks. In a subprocess: on Xeons with AMX a CPU
    bf16 matmul dies with SIGILL unless oneDNN is held to AVX512_CORE_BF16."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16")
    result = subprocess.run([sys.executable, "-c", AUTOCAST_LAYOUT], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
