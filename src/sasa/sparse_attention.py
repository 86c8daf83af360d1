"""Block-sparse attention backends, dispatched the transformers way (``config._attn_implementation``).

Every backend computes the same function: one softmax per query over the keys its :class:`BlockLayout` allows.

* ``"eager"`` (:func:`eager_attention_forward`) and ``"sdpa"`` (transformers' SDPA) take the dense token mask: the
  readable ``O(L^2)`` reference.
* ``"sasa_blocks"`` (:func:`sasa_blocks_attention_forward`) multiplies each query block with its global columns, its
  window band (views, no copy) and its gathered extra blocks, and runs one batched softmax: ``O(L)`` time and memory,
  forward and backward, any device.
* ``"flex_attention"`` (transformers' FlexAttention) takes a ``BlockMask`` built from the layout's kv indices (GPU
  training and inference; CPU inference only, under ``torch.compile``).

:func:`prepare_attention_mask` turns the layout into what the chosen backend reads; the attention layer passes it on
as ``attention_mask`` and never needs to know which kernel runs.

Several SASA checkpoints may live in one process, each loaded as remote code into a module of its own (its own
``BlockLayout`` class, possibly another version of this file). transformers' registry of attention functions is one
global dict, so its ``"sasa_blocks"`` entry is :func:`dispatch_to_layout_code`, which hands each call to the
``sasa_blocks_attention_forward`` of the code that built the layout; a SASA layer calls its own copy directly.
This file is shipped inside checkpoints.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .block_layout import BlockLayout
from .fused_block_attention import fused_block_attention, fused_kernel_usable

#: The attention implementations a SASA model accepts, fastest-first per use (see the README).
SUPPORTED_BACKENDS = ("sasa_blocks", "flex_attention", "sdpa", "eager")
DEFAULT_BACKEND = "sasa_blocks"


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to ``mask`` (True = keep); rows with nothing to keep give zeros, not NaN."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense reference. ``query/key/value [B, H, L, D]``, ``attention_mask [B, 1, L, L]`` bool (True = attend).

    Returns ``(output [B, L, H, D], probabilities [B, H, L, L])``.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is None:
        probs = torch.softmax(scores, dim=-1)
    else:
        probs = masked_softmax(scores, attention_mask.bool())
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def sasa_blocks_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: BlockLayout,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Block-sparse attention over a :class:`BlockLayout`. ``query/key/value [B, H, L, D]``.

    On the CPU in fp32 this runs the fused kernel of :mod:`fused_block_attention`. Otherwise (GPU, bf16, or no
    compiler) it runs the composite path below, the same function from PyTorch operations:
    every query block's keys are three structured parts, each fed to one batched matrix product with no Python loop
    over blocks: the global columns (one dense product against the first ``g`` blocks), the window band (overlapping
    *views* of the keys, no copy), and the ``E`` extra blocks chosen by top-k/AST/random scores (gathered with one
    embedding lookup). Their scores are joined and normalised by one softmax. Global query blocks, which see every
    block, are computed densely against all keys. Time and memory are ``O(L * (g + 2r + 1 + E) * b)``.

    Returns ``(output [B, L, H, D], None)``.
    """
    layout = attention_mask
    if not isinstance(layout, BlockLayout):
        raise TypeError(
            "attn_implementation='sasa_blocks' needs the BlockLayout the SASA model builds as attention_mask, "
            f"got {type(layout).__module__}.{type(layout).__name__} (not {BlockLayout.__module__}.BlockLayout)."
        )
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if fused_kernel_usable(query):  # CPU fp32: one fused kernel, forward and backward
        dropout = dropout if module.training else 0.0
        return fused_block_attention(query, key, value, layout, scaling, dropout), None
    batch, heads, length, head_dim = query.shape
    size, radius, num_global = layout.block_size, layout.window_radius, layout.num_global_blocks
    num_blocks, num_extra = length // size, layout.num_extra_blocks
    rows = batch * heads * num_blocks  # one row per (example, head, query block)
    # Head-major contiguous copies [B*H, L, D] (the projections arrive as [B, L, H, D] memory), query pre-scaled.
    q, k, v = (t.reshape(batch * heads, length, head_dim).contiguous() for t in (query * scaling, key, value))
    scores = []
    global_width = num_global * size
    if num_global:
        scores.append(torch.bmm(q, k[:, :global_width].transpose(1, 2)).view(rows, size, global_width))
    window = 2 * radius + 1
    k_window, v_window = (_window_views(t, radius, size) for t in (k, v))  # [rows, window*b, D]
    scores.append(torch.bmm(q.view(rows, size, head_dim), k_window.transpose(1, 2)))
    if num_extra:
        extra, _ = layout.extra_blocks()  # [B, n, E]
        base = torch.arange(batch * heads, device=query.device).view(batch, heads, 1, 1) * num_blocks
        flat = (extra[:, None] + base).reshape(-1)
        # An embedding lookup is the fastest row gather on CPU (8x index_select on small inputs, equal on large).
        k_extra, v_extra = (F.embedding(flat, t.view(rows, size * head_dim)).view(rows, num_extra * size, head_dim)
                            for t in (k, v))
        scores.append(torch.bmm(q.view(rows, size, head_dim), k_extra.transpose(1, 2)))

    width = sum(piece.shape[-1] for piece in scores)
    key_mask = layout.memo("sparse_key_mask", lambda: _sparse_key_mask(layout))  # [B, n, width]
    scores = torch.cat(scores, dim=-1).view(batch, heads, num_blocks, size, width)
    # In place on the fresh concatenation (cat's backward does not read its output): saves a pass over the scores.
    scores.masked_fill_(~key_mask[:, None, :, None, :], torch.finfo(scores.dtype).min)
    probs = nn.functional.dropout(torch.softmax(scores, dim=-1), p=dropout, training=module.training)
    probs = probs.view(rows, size, width)

    if num_global:
        global_probs = probs[:, :, :global_width].reshape(batch * heads, length, global_width)
        out = torch.bmm(global_probs, v[:, :global_width]).view(rows, size, head_dim)
    else:
        out = torch.zeros(rows, size, head_dim, dtype=query.dtype, device=query.device)
    out = torch.baddbmm(out, probs[:, :, global_width : global_width + window * size], v_window)
    if num_extra:
        out = torch.baddbmm(out, probs[:, :, global_width + window * size :], v_extra)
    out = out.view(batch, heads, num_blocks, size, head_dim)

    if num_global:  # global query blocks see every block: dense rows, O(g * b * L)
        dense = torch.bmm(q[:, :global_width], k.transpose(1, 2)).view(batch, heads, global_width, length)
        global_rows_mask = layout.memo("global_rows_mask", lambda: layout.token_mask(slice(0, num_global))[:, None])
        dense = masked_softmax(dense, global_rows_mask)
        dense = nn.functional.dropout(dense, p=dropout, training=module.training)
        dense = torch.matmul(dense, v.view(batch, heads, length, head_dim))
        out = torch.cat([dense.view(batch, heads, num_global, size, head_dim), out[:, :, num_global:]], dim=2)

    # Padding query blocks: zeros (their rows had no key). Unconditional, so torch.compile traces one graph.
    out = out * layout.real_blocks[:, None, :, None, None].to(out.dtype)
    return out.view(batch, heads, length, head_dim).transpose(1, 2).contiguous(), None


def dispatch_to_layout_code(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The ``"sasa_blocks"`` entry of transformers' global registry: runs ``sasa_blocks_attention_forward`` from the
    code that built ``attention_mask`` (the ``sparse_attention`` module beside its ``BlockLayout`` class), so models
    loaded from different checkpoints, or saved by different versions of SASA, never get each other's kernel."""
    package = type(attention_mask).__module__.rpartition(".")[0]
    own_code = sys.modules.get(f"{package}.sparse_attention" if package else "sparse_attention")
    forward = getattr(own_code, "sasa_blocks_attention_forward", None)
    if forward is None:
        raise TypeError(
            "attn_implementation='sasa_blocks' needs the BlockLayout a SASA model builds as attention_mask, got "
            f"{type(attention_mask).__module__}.{type(attention_mask).__name__}."
        )
    return forward(module, query, key, value, attention_mask, **kwargs)


def _sparse_key_mask(layout: BlockLayout) -> torch.Tensor:
    """``[B, n, width]`` bool: which key tokens each query block's joined scores (global columns | window band |
    extra blocks) may use. Padding query blocks use none."""
    token_valid, size, radius = layout.token_valid, layout.block_size, layout.window_radius
    batch, num_blocks, num_global = token_valid.shape[0], layout.num_blocks, layout.num_global_blocks
    parts = []
    if num_global:
        parts.append(token_valid[:, None, : num_global * size].expand(-1, num_blocks, -1))
    blocks = torch.arange(num_blocks, device=token_valid.device)
    offsets = torch.arange(-radius, radius + 1, device=token_valid.device)
    beyond_global = (blocks[:, None] + offsets[None, :]) >= num_global  # global blocks come from their own part
    window_valid = F.pad(token_valid, (radius * size, radius * size)).unfold(1, (2 * radius + 1) * size, size)
    parts.append(window_valid & beyond_global.repeat_interleave(size, 1))
    if layout.num_extra_blocks:
        extra, used = layout.extra_blocks()
        extra_valid = token_valid.view(batch, num_blocks, size).gather(
            1, extra.reshape(batch, -1, 1).expand(-1, -1, size)).view(batch, num_blocks, -1, size)
        parts.append((extra_valid & used[..., None]).view(batch, num_blocks, -1))
    return torch.cat(parts, dim=-1) & layout.real_blocks[:, :, None]


def _window_views(tensor: torch.Tensor, radius: int, size: int) -> torch.Tensor:
    """``[BH, L, D]`` → ``[BH * n, (2r+1) * b, D]``: for each block, the keys of blocks ``i-r .. i+r`` as overlapping
    views of one padded copy (out-of-range rows read padding or a neighbouring head; the caller masks them)."""
    flat = F.pad(tensor.reshape(-1, tensor.shape[-1]), (0, 0, radius * size, radius * size))
    return flat.unfold(0, (2 * radius + 1) * size, size).transpose(1, 2)


def prepare_attention_mask(layout: BlockLayout, backend: str, needs_grad: bool = False):
    """What ``backend`` reads as ``attention_mask``: the layout itself, a FlexAttention ``BlockMask``, or a dense
    ``[B, 1, L, L]`` bool token mask (eager, sdpa)."""
    if backend == "sasa_blocks":
        return layout
    if backend == "flex_attention":
        if needs_grad and layout.token_valid.device.type != "cuda":
            raise NotImplementedError(
                f"FlexAttention has no backward pass on {layout.token_valid.device.type} in torch {torch.__version__}: "
                "run inference under torch.no_grad()/torch.inference_mode(), or train with "
                "attn_implementation='sasa_blocks' (same function, O(L) memory, forward and backward on every device)."
            )
        return layout.to_block_mask()
    return layout.token_mask()[:, None]


# The key must be registered for transformers to accept attn_implementation="sasa_blocks"; every copy of this file
# registers the same dispatcher, so the last one loaded serves all equally.
ALL_ATTENTION_FUNCTIONS.register("sasa_blocks", dispatch_to_layout_code)
