"""Every backend computes the same sparse function as the dense reference under the layout's token mask."""

import pytest
import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from sasa import fused_block_attention, sparse_attention
from sasa.block_layout import build_layout
from sasa.sparse_attention import eager_attention_forward, prepare_attention_mask, sasa_blocks_attention_forward

BLOCK = 8


class AttentionStub(nn.Module):
    """What the backends read from the calling module: ``training`` (dropout) and ``is_causal`` (SDPA)."""

    is_causal = False


def random_layout(lengths, width, seed, num_global_blocks=1, window_radius=1, random_blocks=1, block=BLOCK):
    generator = torch.Generator().manual_seed(seed)
    token_valid = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    n = width // block
    return build_layout(
        token_valid, block, window_radius=window_radius, num_global_blocks=num_global_blocks, num_topk_blocks=2,
        num_ast_blocks=1, num_random_blocks=random_blocks, topk_scores=torch.rand(len(lengths), n, n, generator=generator),
        ast_scores=torch.rand(len(lengths), n, n, generator=generator) - 0.5, generator=generator,
    )


def qkv(batch, width, heads=3, head_dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, width, head_dim, generator=generator, requires_grad=True) for _ in range(3)]


def run(backend, layout, query, key, value):
    function = eager_attention_forward if backend == "eager" else ALL_ATTENTION_FUNCTIONS[backend]
    mask = prepare_attention_mask(layout, backend)
    out, _ = function(AttentionStub().eval(), query, key, value, mask, scaling=0.25, dropout=0.0)
    return out


def require_fused_kernel() -> None:
    if not fused_block_attention.available():
        pytest.skip("the fused kernel cannot be compiled here")


def assert_same_outputs_and_gradients(actual, expected, inputs, reference_inputs) -> None:
    """Outputs within 1e-5, and so are the input gradients for one random cotangent."""
    assert (actual - expected).abs().max() <= 1e-5
    cotangent = torch.randn_like(expected)
    (expected * cotangent).sum().backward()
    (actual * cotangent).sum().backward()
    for want, got in zip(reference_inputs, inputs):
        assert (got.grad - want.grad).abs().max() <= 1e-5


def use_path(path: str, monkeypatch) -> None:
    """Run the sasa_blocks backend through its fused CPU kernel, or force its composite PyTorch path."""
    if path == "fused":
        require_fused_kernel()
    if path == "composite":
        monkeypatch.setattr(sparse_attention, "fused_kernel_usable", lambda query: False)


@pytest.fixture(params=["fused", "composite"])
def sasa_path(request, monkeypatch):
    use_path(request.param, monkeypatch)
    return request.param


CASES = [
    # (lengths, width, num_global_blocks, window_radius)
    ([96, 61], 96, 1, 1),
    ([40, 13, 33], 48, 2, 0),
    ([128], 128, 0, 2),
    ([16, 16], 16, 1, 1),  # every block global
    ([200, 9], 200, 1, 1),  # one example is a single real block
]


@pytest.mark.parametrize(("backend", "path"), [("sasa_blocks", "fused"), ("sasa_blocks", "composite"), ("sdpa", None)])
@pytest.mark.parametrize(("lengths", "width", "num_global", "radius"), CASES)
def test_backend_equals_dense_reference_outputs_and_gradients(backend, path, lengths, width, num_global, radius,
                                                              monkeypatch):
    use_path(path, monkeypatch)
    layout = random_layout(lengths, width, seed=width, num_global_blocks=num_global, window_radius=radius)
    reference_inputs = qkv(len(lengths), width)
    inputs = [t.detach().clone().requires_grad_() for t in reference_inputs]
    expected = run("eager", layout, *reference_inputs)
    actual = run(backend, layout, *inputs)
    assert_same_outputs_and_gradients(actual, expected, inputs, reference_inputs)


@pytest.mark.parametrize(("block", "head_dim"), [(32, 64), (12, 40), (16, 8), (4, 24)])
def test_fused_kernel_handles_any_block_size_and_head_dim(block, head_dim):
    """The kernel's SIMD tiles (whole vectors, a scalar tail, padded query columns) against the dense reference."""
    require_fused_kernel()
    width = 10 * block
    layout = random_layout([width, width - block - 3], width, seed=block, block=block)
    reference_inputs = qkv(2, width, heads=2, head_dim=head_dim, seed=head_dim)
    inputs = [t.detach().clone().requires_grad_() for t in reference_inputs]
    expected = run("eager", layout, *reference_inputs)
    actual = run("sasa_blocks", layout, *inputs)
    assert_same_outputs_and_gradients(actual, expected, inputs, reference_inputs)


@pytest.mark.parametrize("memory", ["head_major", "token_major", "strided_head_dim"])
def test_fused_kernel_reads_queries_keys_values_in_any_memory_layout(memory):
    """The kernel reads q/k/v in place ([B, H, L, D] memory, the projections' [B, L, H, D] memory, or a copy where D
    is not contiguous) and copies key/value blocks per thread: the same function in every case."""
    require_fused_kernel()
    layout = random_layout([96, 61], 96, seed=3)
    reference_inputs = qkv(2, 96, heads=4)

    def arrange(tensor):
        tensor = tensor.detach()
        if memory == "token_major":
            return tensor.transpose(1, 2).contiguous().transpose(1, 2)
        if memory == "strided_head_dim":
            return torch.stack([tensor, -tensor], dim=-1)[..., 0]
        return tensor.clone()

    inputs = [arrange(t).requires_grad_() for t in reference_inputs]
    assert inputs[0].stride(-1) == (2 if memory == "strided_head_dim" else 1)
    expected = run("eager", layout, *reference_inputs)
    actual = run("sasa_blocks", layout, *inputs)
    assert_same_outputs_and_gradients(actual, expected, inputs, reference_inputs)


@pytest.mark.parametrize("heads", [1, 2])
def test_fused_kernel_copies_never_serve_another_example_or_head(heads):
    """One thread runs every (example, head) in turn, reusing its scratch of copied key/value blocks: a block copied
    for one example or head must never be read for the next (same block indices, other data)."""
    require_fused_kernel()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        layout = random_layout([96, 96, 80], 96, seed=5)
        reference_inputs = qkv(3, 96, heads=heads, seed=heads)
        inputs = [t.detach().clone().requires_grad_() for t in reference_inputs]
        expected = run("eager", layout, *reference_inputs)
        actual = run("sasa_blocks", layout, *inputs)
        assert_same_outputs_and_gradients(actual, expected, inputs, reference_inputs)
    finally:
        torch.set_num_threads(threads)


def test_fused_kernel_is_the_default_cpu_path():
    require_fused_kernel()
    query = torch.randn(1, 2, 64, 16)
    assert fused_block_attention.fused_kernel_usable(query)
    assert not fused_block_attention.fused_kernel_usable(query.double())  # other dtypes: the composite path


def test_fully_padded_query_blocks_give_zeros_not_nan(sasa_path):
    layout = random_layout([9, 40], 40, seed=3)
    for backend in ("eager", "sdpa", "sasa_blocks"):
        out = run(backend, layout, *qkv(2, 40))
        assert torch.isfinite(out).all()
        assert out[0, 16:].eq(0).all(), backend  # blocks 2..4 of example 0 are all padding


def test_dense_reference_really_is_sparse():
    """Guard against a vacuous comparison: the layout must differ from full attention."""
    layout = random_layout([96], 96, seed=5, random_blocks=0)
    assert layout.density() < 1.0
    query, key, value = qkv(1, 96)
    full, _ = eager_attention_forward(AttentionStub(), query, key, value, None, scaling=0.25)
    assert (run("eager", layout, query, key, value) - full).abs().max() > 1e-3


def test_sasa_blocks_rejects_a_dense_mask_with_a_clear_error():
    query, key, value = qkv(1, 16)
    with pytest.raises(TypeError, match="BlockLayout"):
        sasa_blocks_attention_forward(AttentionStub(), query, key, value, torch.ones(1, 1, 16, 16, dtype=torch.bool))


def test_flex_on_cpu_with_gradients_is_a_clear_error():
    layout = random_layout([32], 32, seed=1)
    with pytest.raises(NotImplementedError, match="sasa_blocks"):
        prepare_attention_mask(layout, "flex_attention", needs_grad=True)


def test_fused_dropout_equals_the_reference_under_the_same_mask():
    """Attention dropout inside the fused kernel: outputs and gradients equal a dense computation with its mask."""
    require_fused_kernel()
    layout = random_layout([96, 61], 96, seed=7)
    inputs = qkv(2, 96)
    reference_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    p, seed = 0.3, 1234
    out = fused_block_attention.fused_block_attention(*inputs, layout, scaling=0.25, dropout=p, seed=seed)
    keep = fused_block_attention.dropout_keep(seed, 2 * 3, 96, p).view(2, 3, 96, 96)
    query, key, value = reference_inputs
    probs = sparse_attention.masked_softmax(query @ key.transpose(-1, -2) * 0.25, layout.token_mask()[:, None])
    expected = (probs * keep / (1 - p)) @ value
    expected = expected.transpose(1, 2)
    assert 0.2 < 1 - keep.float().mean() < 0.4
    assert_same_outputs_and_gradients(out, expected, inputs, reference_inputs)
    again = fused_block_attention.fused_block_attention(*inputs, layout, scaling=0.25, dropout=p, seed=seed)
    assert torch.equal(again, out)


@pytest.mark.parametrize(("device", "head_dim", "dropout", "triton", "expected"), [
    ("cpu", 64, False, True, "sasa_blocks"),  # the fused C++ kernel; FlexAttention has no CPU backward
    ("cuda", 64, False, True, "flex_attention"),  # one fused block-sparse Triton kernel, forward and backward
    ("cuda", 64, True, True, "sasa_blocks"),  # training with attention dropout: flex cannot apply it
    ("cuda", 8, False, True, "sasa_blocks"),  # below the Triton kernel's minimum head size
    ("cuda", 64, False, False, "sasa_blocks"),  # no Triton to compile flex with
])
def test_auto_backend_per_device(device, head_dim, dropout, triton, expected, monkeypatch):
    monkeypatch.setattr(sparse_attention, "_triton_available", lambda: triton)
    assert sparse_attention.resolve_backend("sasa_auto", torch.device(device), head_dim, dropout) == expected
    assert sparse_attention.resolve_backend("eager", torch.device(device), head_dim, dropout) == "eager"


@pytest.mark.parametrize(("length", "expected"), [(1, 128), (128, 128), (129, 256), (300, 384), (513, 640),
                                                 (700, 768), (1000, 1024), (1025, 1280), (2048, 2048), (3000, 3072),
                                                 (16000, 16384)])
def test_flex_lengths_are_bucketed_to_few_reused_shapes(length, expected):
    assert sparse_attention.flex_padded_length(length, 128) == expected
    assert sparse_attention.flex_tile_size(32) == 128 and sparse_attention.flex_tile_size(256) == 256
    assert sparse_attention.flex_tile_size(48) == 384


def test_registry_entry_of_the_default_dispatches_by_mask_type(monkeypatch):
    """transformers' registry entry for "sasa_auto": the layout runs sasa_blocks, a BlockMask runs FlexAttention."""
    layout = random_layout([40, 25], 48, seed=3)
    query, key, value = qkv(2, 48)
    expected = run("sasa_blocks", layout, query, key, value)
    auto = ALL_ATTENTION_FUNCTIONS["sasa_auto"]
    out, _ = auto(AttentionStub().eval(), query, key, value, layout, scaling=0.25, dropout=0.0)
    assert torch.equal(out, expected)
    monkeypatch.setattr(sparse_attention, "sasa_flex_attention_forward", lambda *args, **kwargs: ("flex", None))
    assert auto(AttentionStub().eval(), query, key, value, prepare_attention_mask(layout, "flex_attention"))[0] == "flex"
