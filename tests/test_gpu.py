"""GPU paths: FlexAttention (the CUDA default) at SASA's block sizes, bf16 and autocast, a frequency table and AST links,
``torch.compile``. Skipped where no CUDA device exists (CI has none); ``scripts/gpu_check`` runs them with timings.

Not yet run on a GPU: no device was lent to the sessions that wrote them (see the README's status notes).
"""

import copy

import pytest
import torch

from conftest import padded_batch, tiny_config
from sasa import SasaForMaskedLM, SasaModel, sparse_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def gpu_config(block_size=32, **overrides):
    """Head size 16 (FlexAttention's GPU minimum), 1026 positions, a layout with top-k and AST blocks."""
    fields = dict(block_size=block_size, hidden_size=64, num_attention_heads=4, max_position_embeddings=1026)
    return tiny_config(**dict(fields, **overrides))


def with_frequency_table(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    model.base_model.set_frequency_table(
        torch.randint(0, vocab, (vocab, 3), generator=generator), torch.rand(vocab, 3, generator=generator))
    return model


def gpu_inputs(config, lengths=(1000, 700), seed=0):
    input_ids, attention_mask = padded_batch(list(lengths), config.vocab_size, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    ast_links = torch.randint(-1, max(lengths), (len(lengths), max(lengths), 2), generator=generator)
    return dict(input_ids=input_ids.cuda(), attention_mask=attention_mask.cuda(), ast_links=ast_links.cuda())


def models(config, backends, cls=SasaModel):
    torch.manual_seed(0)
    built = []
    for backend in backends:
        model = with_frequency_table(cls._from_config(copy.deepcopy(config), attn_implementation=backend))
        if built:
            model.load_state_dict(built[0].state_dict())
        built.append(model.cuda())
    return built


def outputs_and_grads(model, inputs, dtype=None):
    model.train()
    real = inputs["attention_mask"].bool()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        hidden = model(**inputs).last_hidden_state
    hidden[real].float().pow(2).mean().backward()
    grads = {name: p.grad.float() for name, p in model.named_parameters() if p.grad is not None}
    return hidden.detach().float()[real], grads


@pytest.mark.parametrize(("block_size", "dtype"), [(32, None), (32, torch.bfloat16), (64, torch.bfloat16),
                                                  (128, torch.bfloat16)], ids=["32-fp32", "32-bf16", "64-bf16", "128-bf16"])
def test_flex_attention_trains_like_sasa_blocks(block_size, dtype):
    """FlexAttention at 128-token tiles with SASA's blocks in mask_mod: outputs and gradients as the composite path."""
    reference, flex = models(gpu_config(block_size), ("sasa_blocks", "flex_attention"))
    inputs = gpu_inputs(reference.config)
    (out_ref, grads_ref), (out, grads) = (outputs_and_grads(m, inputs, dtype) for m in (reference, flex))
    tolerance = 1e-4 if dtype is None else 5e-2
    assert (out - out_ref).abs().max() <= tolerance
    assert grads.keys() == grads_ref.keys() and len(grads) > 10
    for name, grad in grads.items():
        scale = grads_ref[name].abs().max().clamp(min=1e-3)
        assert (grad - grads_ref[name]).abs().max() / scale <= (1e-3 if dtype is None else 5e-2), name


def test_default_backend_is_flex_on_cuda_without_attention_dropout(monkeypatch):
    calls = []
    flex_forward = sparse_attention.sasa_flex_attention_forward
    from sasa import modeling_sasa

    monkeypatch.setattr(modeling_sasa, "sasa_flex_attention_forward",
                        lambda *args, **kwargs: calls.append(1) or flex_forward(*args, **kwargs))
    auto, reference = models(gpu_config(), (None, "sasa_blocks"))
    assert auto.config._attn_implementation == "sasa_auto"
    inputs = gpu_inputs(auto.config)
    (out, grads), (out_ref, grads_ref) = (outputs_and_grads(m, inputs) for m in (auto, reference))
    assert calls, "sasa_auto did not run FlexAttention on CUDA"
    assert (out - out_ref).abs().max() <= 1e-4
    calls.clear()
    dropout = with_frequency_table(SasaModel(gpu_config(attention_probs_dropout_prob=0.1))).cuda().train()
    dropout(**inputs).last_hidden_state.sum().backward()
    assert not calls  # attention dropout: the default keeps sasa_blocks, which applies it


def test_bf16_inference_matches_fp32_closely():
    (fp32,) = models(gpu_config(), ("sasa_blocks",))
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    inputs = gpu_inputs(fp32.config)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = fp32.eval()(**inputs).last_hidden_state
        for backend in ("sasa_blocks", "flex_attention"):
            bf16.set_attn_implementation(backend)
            actual = bf16.eval()(**inputs).last_hidden_state.float()
            assert (actual - expected)[real].abs().max() <= 0.1, backend


@pytest.mark.parametrize("backend", [None, "sasa_blocks"])
def test_autocast_training_with_a_frequency_table_and_ast_links(backend):
    """bf16 autocast: finite masked-LM loss, and the layout (built in fp32) equals the fp32 one."""
    (model,) = models(gpu_config(), (backend,), cls=SasaForMaskedLM)
    inputs = gpu_inputs(model.config)
    labels = inputs["input_ids"].masked_fill(torch.rand(inputs["input_ids"].shape, device="cuda") > 0.15, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.train()(**inputs, labels=labels).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    args = (inputs["input_ids"], inputs["attention_mask"], inputs["ast_links"])
    fp32_layout = model.sasa.layout(*args)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16_layout = model.sasa.layout(*args)
    assert torch.equal(fp32_layout.block_mask, bf16_layout.block_mask)
    assert (fp32_layout.sources >= 3).any()  # top-k and AST blocks were chosen


@pytest.mark.parametrize("backend", ["sasa_blocks", "flex_attention"])
def test_compiled_model_equals_eager_on_gpu(backend):
    """torch.compile of the whole model (fullgraph for the composite path) over two lengths, outputs and gradients."""
    (eager,) = models(gpu_config(), (backend,))
    compiled = torch.compile(copy.deepcopy(eager), fullgraph=backend == "sasa_blocks")
    for lengths in ((1000, 700), (600, 300)):
        inputs = gpu_inputs(eager.config, lengths)
        (out, grads), (out_ref, grads_ref) = (outputs_and_grads(m, inputs) for m in (compiled, eager))
        assert (out - out_ref).abs().max() <= 1e-4, lengths
        for name, grad in grads.items():
            assert (grad - grads_ref[name.removeprefix("_orig_mod.")]).abs().max() <= 1e-3, name
        eager.zero_grad()
        compiled.zero_grad()


def test_flex_training_step_with_the_default_attention_dropout_warns_and_runs():
    """attention_probs_dropout_prob=0.1 (the default) with FlexAttention: a training step runs without attention
    dropout, with a warning (transformers' FlexAttention raises), equal to the same model with it set to 0."""
    sparse_attention._warned.clear()
    with_dropout, without = models(gpu_config(attention_probs_dropout_prob=0.1), ("flex_attention", "flex_attention"))
    without.config.attention_probs_dropout_prob = 0.0
    for layer in without.encoder.layer:
        layer.attention.self.dropout.p = 0.0
    inputs = gpu_inputs(with_dropout.config)
    with pytest.warns(UserWarning, match="cannot apply attention dropout"):
        out, grads = outputs_and_grads(with_dropout, inputs)
    out_ref, grads_ref = outputs_and_grads(without, inputs)
    assert torch.equal(out, out_ref)
    assert all(torch.equal(grads[name], grads_ref[name]) for name in grads_ref)


def test_flex_compiles_once_per_length_bucket():
    """Static-shape compiles at bucketed lengths: 4 lengths in 2 buckets (512, 640 tokens) compile 2 shapes. (Last
    in the file: it resets dynamo, so the tests before it share their compiled kernels.)"""
    torch._dynamo.reset()
    sparse_attention._compiled_flex.clear()
    (flex,) = models(gpu_config(), ("flex_attention",))
    from torch._dynamo.utils import counters

    counters.clear()
    with torch.no_grad():
        for lengths in ((500, 300), (480, 200), (600, 20), (630, 400)):
            flex.eval()(**gpu_inputs(flex.config, lengths))
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
