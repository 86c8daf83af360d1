"""Block-sparse attention backends, dispatched the transformers way (``config._attn_implementation``).

Every backend computes the same function: one softmax per query over the keys its :class:`BlockLayout` allows.

* ``"eager"`` (:func:`eager_attention_forward`) and ``"sdpa"`` (transformers' SDPA) take the dense token mask: the
  readable ``O(L^2)`` reference.
* ``"sasa_blocks"`` (:func:`sasa_blocks_attention_forward`) gathers each query block's key/value blocks by index and
  runs one batched softmax: ``O(L)`` time and memory, forward and backward, any device.
* ``"flex_attention"`` (transformers' FlexAttention) takes a ``BlockMask`` built from the layout's kv indices (GPU
  training and inference; CPU inference only, under ``torch.compile``).

:func:`prepare_attention_mask` turns the layout into what the chosen backend reads; the attention layer passes it on
as ``attention_mask`` and never needs to know which kernel runs. This file is shipped inside checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .block_layout import BlockLayout

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
    """Gathered-blocks sparse attention. ``query/key/value [B, H, L, D]``; ``attention_mask`` is the :class:`BlockLayout`.

    Global query blocks (which may see every block) are computed densely against all keys, ``O(g * b * L)``. Every
    other query block gathers its at most ``max_sparse_blocks`` key/value blocks with one ``index_select`` and runs
    one masked softmax over them, ``O(L * max_sparse_blocks * b)``. Returns ``(output [B, L, H, D], None)``.
    """
    layout = attention_mask
    if not isinstance(layout, BlockLayout):
        raise TypeError(
            "attn_implementation='sasa_blocks' needs the BlockLayout the SASA model builds as attention_mask, "
            f"got {type(layout).__name__}."
        )
    batch, heads, length, head_dim = query.shape
    size = layout.block_size
    num_blocks = length // size
    num_global = layout.num_global_blocks
    scaling = head_dim**-0.5 if scaling is None else scaling
    outputs = []

    if num_global:
        rows = num_global * size
        scores = torch.matmul(query[:, :, :rows], key.transpose(-1, -2)) * scaling  # [B, H, g*b, L]
        probs = masked_softmax(scores, layout.token_mask(slice(0, num_global))[:, None])
        probs = nn.functional.dropout(probs, p=dropout, training=module.training)
        outputs.append(torch.matmul(probs, value).transpose(1, 2))  # [B, g*b, H, D]

    num_rows = num_blocks - num_global
    if num_rows:
        slots = layout.max_sparse_blocks
        kv_indices = layout.kv_indices[:, num_global:, :slots].long()  # [B, m, K]
        slot_used = torch.arange(slots, device=query.device) < layout.kv_num_blocks[:, num_global:, None]
        flat = (kv_indices + torch.arange(batch, device=query.device)[:, None, None] * num_blocks).reshape(-1)

        def gather(blocks: torch.Tensor) -> torch.Tensor:  # [B, H, L, D] -> [B, m, K*b, H, D]
            blocks = blocks.transpose(1, 2).reshape(batch * num_blocks, size, heads, head_dim)
            return blocks.index_select(0, flat).view(batch, num_rows, slots * size, heads, head_dim)

        key_valid = layout.token_valid.reshape(batch * num_blocks, size).index_select(0, flat)
        key_valid = (key_valid.view(batch, num_rows, slots, size) & slot_used[..., None])
        key_valid = key_valid.view(batch, num_rows, 1, 1, slots * size)

        query_blocks = query.transpose(1, 2)[:, num_global * size :].reshape(batch, num_rows, size, heads, head_dim)
        scores = torch.einsum("bmqhd,bmkhd->bmhqk", query_blocks, gather(key)) * scaling  # [B, m, H, b, K*b]
        probs = masked_softmax(scores, key_valid)
        probs = nn.functional.dropout(probs, p=dropout, training=module.training)
        out = torch.einsum("bmhqk,bmkhd->bmqhd", probs, gather(value))
        outputs.append(out.reshape(batch, num_rows * size, heads, head_dim))

    return torch.cat(outputs, dim=1).contiguous(), None


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


ALL_ATTENTION_FUNCTIONS.register("sasa_blocks", sasa_blocks_attention_forward)
