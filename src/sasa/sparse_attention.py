"""Block-sparse attention backends, dispatched the transformers way (``config._attn_implementation``).

Every backend computes the same function: one softmax per query over the keys its :class:`BlockLayout` allows.

* ``"eager"`` (:func:`eager_attention_forward`) and ``"sdpa"`` (transformers' SDPA) take the dense token mask: the
  readable ``O(L^2)`` reference.
* ``"sasa_blocks"`` (:func:`sasa_blocks_attention_forward`) multiplies each query block with its global columns, its
  window band (views, no copy) and its gathered extra blocks, and runs one batched softmax: ``O(L)`` time and memory,
  forward and backward, any device.
* ``"flex_attention"`` (:func:`sasa_flex_attention_forward`, PyTorch's FlexAttention compiled with static shapes)
  takes a ``BlockMask`` built from the layout at 128-token tiles, SASA's blocks resolved in its ``mask_mod`` (GPU
  training and inference; CPU inference only).
* ``"sasa_auto"`` (the default) is one of the two sparse kernels, per device (:func:`resolve_backend`).

:func:`prepare_attention_mask` turns the layout into what the chosen backend reads; the attention layer passes it on
as ``attention_mask`` and never needs to know which kernel runs.

Several SASA checkpoints may live in one process, each loaded as remote code into a module of its own (its own
``BlockLayout`` class, possibly another version of this file). transformers' registry of attention functions is one
global dict, so its ``"sasa_blocks"`` entry is :func:`dispatch_to_layout_code`, which hands each call to the
``sasa_blocks_attention_forward`` of the code that built the layout; a SASA layer calls its own copy directly.
This file is shipped inside checkpoints.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .block_layout import BlockLayout
from .fused_block_attention import fused_block_attention, fused_kernel_usable

#: The default ``attn_implementation``: the kernel is chosen per device at every forward (:func:`resolve_backend`).
AUTO_BACKEND = "sasa_auto"
#: The attention implementations a SASA model accepts (see docs/layout.md#attention-backends).
SUPPORTED_BACKENDS = (AUTO_BACKEND, "sasa_blocks", "flex_attention", "sdpa", "eager")
DEFAULT_BACKEND = AUTO_BACKEND
#: Devices on which ``"sasa_auto"`` runs FlexAttention (compiled Triton kernels, forward and backward).
FLEX_DEVICE_TYPES = ("cuda",)


def resolve_backend(backend: str, device: torch.device, head_dim: int, attention_dropout: bool) -> str:
    """The kernel ``backend`` runs on ``device``: itself, unless it is ``"sasa_auto"``, which picks

    * ``"flex_attention"`` on CUDA (one fused, block-sparse Triton kernel per layer, forward and backward; the
      composite path of ``"sasa_blocks"`` launches ~38 kernels per layer and keeps ~6x the memory for backward),
      unless attention dropout is active (training with ``attention_probs_dropout_prob > 0``: FlexAttention cannot
      apply it, and the default never changes the function a model computes), the head size is below 16 (the Triton
      kernel's minimum) or Triton is missing;
    * ``"sasa_blocks"`` everywhere else (on the CPU its fused C++ kernel, the fastest there; FlexAttention has no
      CPU backward).
    """
    if backend != AUTO_BACKEND:
        return backend
    if device.type in FLEX_DEVICE_TYPES and head_dim >= 16 and not attention_dropout and _triton_available():
        return "flex_attention"
    return "sasa_blocks"


def _triton_available() -> bool:
    """Triton, which compiles FlexAttention's GPU kernels, is importable (CUDA builds of torch ship it)."""
    return importlib.util.find_spec("triton") is not None


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


#: FlexAttention's largest kernel tile (its GPU configurations use 16..128 rows and columns): its BlockMask's block
#: size must be a multiple of the tile that runs, so SASA's blocks are grouped into BlockMask blocks of 128 tokens (or
#: the least common multiple with a larger ``block_size``) and resolved token by token inside ``mask_mod``.
FLEX_TILE = 128
#: Most shapes one compiled FlexAttention keeps (torch's default ``recompile_limit`` is 8): lengths are bucketed
#: (:func:`flex_padded_length`), so a whole training run needs a handful per batch size.
FLEX_RECOMPILE_LIMIT = 64
_compiled_flex: dict[str, object] = {}


def flex_tile_size(block_size: int) -> int:
    """The BlockMask block size FlexAttention runs SASA's ``block_size`` at: ``lcm(block_size, FLEX_TILE)``."""
    return math.lcm(block_size, FLEX_TILE)


def flex_padded_length(length: int, tile: int) -> int:
    """The length FlexAttention computes a ``length``-token sequence at: a whole number of tiles, rounded up to
    ``1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, ...`` tiles (at most a third more), so that the static-shape compile
    of each length is reused across batches. The padding attends nothing and costs no kernel work (its tiles are in
    no row's kv list)."""
    tiles = max(1, -(-length // tile))
    power = 1 << max(tiles - 1, 0).bit_length()  # the power of two >= tiles
    for bucket in (power * 5 // 8, power * 3 // 4):  # 1.25 and 1.5 times the power of two below
        if bucket >= tiles:
            return bucket * tile
    return power * tile


def compiled_flex_attention():
    """``torch.compile(flex_attention, dynamic=False)``, made once per process.

    Static shapes, because the dynamic-shape kernel Inductor generates for the CPU fails to compile at the second
    distinct length (torch 2.13: ``cur_kvSplitSize5 was not declared``), and transformers' own wrapper compiles with
    automatic dynamic shapes. :func:`flex_padded_length` keeps the number of shapes small.
    """
    if "flex" not in _compiled_flex:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled_flex["flex"] = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex["flex"]


def sasa_flex_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """FlexAttention over the ``BlockMask`` of :func:`prepare_attention_mask`. ``query/key/value [B, H, L, D]``.

    The inputs are zero-padded to the BlockMask's (bucketed) length, run through one compiled FlexAttention with
    static shapes (outside an enclosing ``torch.compile``; inside one, the caller's graph compiles it) and cut back.
    FlexAttention cannot drop attention probabilities: with ``dropout > 0`` in training it warns once and attends
    without attention dropout (the hidden-state dropouts still apply); ``"sasa_blocks"`` implements it.

    Returns ``(output [B, L, H, D], None)``.
    """
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if not isinstance(attention_mask, BlockMask):
        raise TypeError(
            "attn_implementation='flex_attention' needs the BlockMask a SASA model builds from its layout as "
            f"attention_mask, got {type(attention_mask).__name__}."
        )
    if dropout > 0 and module.training:
        _warn_once_here(
            "FlexAttention cannot apply attention dropout: training without it (attention_probs_dropout_prob="
            f"{dropout} is ignored; hidden dropout still applies). Set attention_probs_dropout_prob=0 to silence "
            "this, or train with attn_implementation='sasa_blocks', which applies it."
        )
    length, padded = query.shape[-2], attention_mask.seq_lengths[0]
    if padded != length:
        query, key, value = (_pad_keeping_strides(t, padded - length) for t in (query, key, value))
    if torch.compiler.is_compiling() and query.device.type != "cpu":
        output = flex_attention(query, key, value, block_mask=attention_mask, scale=scaling)
    else:  # on the CPU, inside a compiled model too: Inductor's CPU template refuses it inside a larger graph
        output = _run_compiled_flex(query, key, value, attention_mask, scaling)
    return output[:, :, :length].transpose(1, 2).contiguous(), None


@torch.compiler.disable
def _run_compiled_flex(query, key, value, block_mask, scale):
    """The process's compiled FlexAttention, in a frame of its own (a graph break inside a compiled model)."""
    with torch._dynamo.config.patch(recompile_limit=FLEX_RECOMPILE_LIMIT):
        return compiled_flex_attention()(query, key, value, block_mask=block_mask, scale=scale)


def _pad_keeping_strides(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    """``[B, H, L, D]`` → ``[B, H, L + pad, D]`` (zeros), in the memory order of the input: the projections arrive as
    ``[B, L, H, D]`` memory, and a static-shape compile guards on strides, so a padded length must look like an
    unpadded one of the same length or it compiles again."""
    if tensor.transpose(1, 2).is_contiguous():
        return F.pad(tensor.transpose(1, 2), (0, 0, 0, 0, 0, pad)).transpose(1, 2)
    return F.pad(tensor, (0, 0, 0, pad))


_warned: set[str] = set()


def _warn_once_here(message: str) -> None:
    """One warning per message and process (never inside a ``torch.compile`` trace)."""
    if message not in _warned and not torch.compiler.is_compiling():
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def prepare_attention_mask(layout: BlockLayout, backend: str, needs_grad: bool = False):
    """What ``backend`` reads as ``attention_mask``: the layout itself, a FlexAttention ``BlockMask`` (at
    :func:`flex_tile_size` blocks, over :func:`flex_padded_length` tokens), or a dense ``[B, 1, L, L]`` bool token
    mask (eager, sdpa)."""
    if backend == "sasa_blocks":
        return layout
    if backend == "flex_attention":
        if needs_grad and layout.token_valid.device.type != "cuda":
            raise NotImplementedError(
                f"FlexAttention has no backward pass on {layout.token_valid.device.type} in torch {torch.__version__}: "
                "run inference under torch.no_grad()/torch.inference_mode(), or train with "
                "attn_implementation='sasa_blocks' (same function, O(L) memory, forward and backward on every device)."
            )
        tile = flex_tile_size(layout.block_size)
        return layout.to_block_mask(tile, flex_padded_length(layout.seq_len, tile), for_backward=needs_grad)
    return layout.token_mask()[:, None]


def dispatch_auto(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The ``"sasa_auto"`` entry of transformers' registry: FlexAttention for a ``BlockMask``, else
    :func:`dispatch_to_layout_code` (the mask says which kernel :func:`resolve_backend` chose)."""
    from torch.nn.attention.flex_attention import BlockMask

    if isinstance(attention_mask, BlockMask):
        return sasa_flex_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return dispatch_to_layout_code(module, query, key, value, attention_mask, **kwargs)


# The keys must be registered for transformers to accept attn_implementation="sasa_blocks"/"sasa_auto"; every copy
# of this file registers the same dispatchers, so the last one loaded serves all equally.
ALL_ATTENTION_FUNCTIONS.register("sasa_blocks", dispatch_to_layout_code)
ALL_ATTENTION_FUNCTIONS.register(AUTO_BACKEND, dispatch_auto)
