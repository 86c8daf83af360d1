"""torch.compile sees the whole model: the fused kernel is a PyTorch operator (no graph break), varying lengths do not
recompile per length, and compiled outputs and gradients equal eager ones."""

import copy

import pytest
import torch

from conftest import padded_batch, tiny_config
from sasa import SasaForSequenceClassification, fused_block_attention
from sasa.block_layout import build_layout

pytestmark = pytest.mark.skipif(not fused_block_attention.available(), reason="needs the fused CPU kernel (a compiler)")


def classifier(seed=0, **overrides):
    """A classification model with every layout pattern in use (window, global, top-k table, AST links)."""
    torch.manual_seed(seed)
    model = SasaForSequenceClassification(tiny_config(num_labels=2, **overrides))
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(seed)
    model.base_model.set_frequency_table(torch.randint(0, vocab, (vocab, 3), generator=generator),
                                         torch.rand(vocab, 3, generator=generator))
    return model


def batch(lengths, seed=0):
    input_ids, attention_mask = padded_batch(lengths, seed=seed)
    width = max(lengths)
    ast_links = torch.randint(-1, width, (len(lengths), width, 2), generator=torch.Generator().manual_seed(seed))
    return dict(input_ids=input_ids, attention_mask=attention_mask, ast_links=ast_links,
                labels=torch.arange(len(lengths)) % 2)


def test_kernel_operators_pass_torch_library_checks():
    """Schema, fake (meta) implementation and autograd registration of the kernel operator, as torch checks them."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 8, generator=generator, requires_grad=True) for _ in range(3))
    token_valid = torch.ones(2, 40, dtype=torch.bool)
    token_valid[1, 30:] = False
    layout = build_layout(token_valid, 8, num_ast_blocks=1, ast_scores=torch.rand(2, 5, 5, generator=generator))
    args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout.kv_num_blocks, layout.kv_indices,
            layout.token_valid, torch.zeros(1, dtype=torch.long), 8, 0.35, 0.0)
    torch.library.opcheck(fused_block_attention._forward_op, args)


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_compiled_model_has_no_graph_breaks(mode):
    model = classifier(attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1)
    model.train(mode == "training")
    with torch.set_grad_enabled(mode == "training"):
        explanation = torch._dynamo.explain(model)(**batch([45, 30]))
    reasons = [reason.reason for reason in explanation.break_reasons]
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), reasons


def test_varying_lengths_do_not_recompile_per_length():
    model = classifier().eval()
    compilations = []

    def counting_backend(graph, example_inputs):
        compilations.append(len(example_inputs))
        return graph.forward

    compiled = torch.compile(model, backend=counting_backend)
    with torch.no_grad():
        for lengths in ([45, 30], [60, 50], [70, 33], [100, 90], [23, 9], [64, 64], [17, 1]):
            compiled(**batch(lengths, seed=lengths[0]))
    assert len(compilations) <= 2, compilations  # one static graph, then one with a dynamic length


@pytest.mark.slow
def test_compiled_outputs_and_gradients_equal_eager():
    model = classifier()
    compiled = torch.compile(copy.deepcopy(model), dynamic=True)  # inductor, the default backend
    for lengths in ([45, 30], [70, 61]):
        inputs = batch(lengths, seed=lengths[0])
        expected = model(**inputs)
        expected.loss.backward()
        got = compiled(**inputs)
        got.loss.backward()
        torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
        for (name, param), compiled_param in zip(model.named_parameters(), compiled.parameters()):
            torch.testing.assert_close(compiled_param.grad, param.grad, atol=1e-5, rtol=1e-5, msg=name)
            param.grad, compiled_param.grad = None, None


def test_bad_input_is_still_an_error_when_compiled():
    compiled = torch.compile(classifier().eval(), backend="aot_eager")
    inputs = batch([45, 30])
    inputs["attention_mask"] = inputs["attention_mask"].flip(1)  # left padding
    with pytest.raises((RuntimeError, ValueError), match="right-padded"):
        compiled(**inputs)


@pytest.mark.slow
def test_the_composite_path_compiles_to_one_graph_equal_to_eager(monkeypatch):
    """The path GPUs (and bf16) run, forced on the CPU: one graph with fullgraph=True, outputs equal to eager's."""
    from sasa import sparse_attention

    monkeypatch.setattr(sparse_attention, "fused_kernel_usable", lambda query: False)
    torch._dynamo.reset()
    model = classifier().eval()
    inputs = batch([45, 30])
    explanation = torch._dynamo.explain(model)(**inputs)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), [
        reason.reason for reason in explanation.break_reasons]
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=1e-5)
