"""Block layout: which key blocks each query block attends to.

One small function per SASA pattern (window, global, top-k scores, AST scores, random), a union that composes them
(:func:`build_layout`), and the :class:`BlockLayout` it returns, which every attention backend reads:

* ``kv_num_blocks [B, n]`` and ``kv_indices [B, n, n]`` (the format ``BlockMask.from_kv_blocks`` takes; entries past
  ``kv_num_blocks`` are meaningless),
* ``token_mask() [B, L, L]`` (a dense bool token mask, for the readable reference backends and for tests).

Conventions: ``n = L / block_size`` blocks, ``L`` already padded to a multiple of ``block_size``. A block is *real* if it
holds at least one non-padding token. Padding blocks are never selected as keys and get no keys as queries (their
attention output is zero). Inside a real block, padding *keys* are masked token by token, padding *queries* attend
like any other token (as in RoBERTa). The layout is computed once per forward and shared by all layers and heads.

This file is shipped inside checkpoints; it imports only torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Codes of :attr:`BlockLayout.sources`: which pattern selected a block (0 = not selected).
PATTERN_CODES = {"window": 1, "global": 2, "top-k": 3, "ast": 4, "random": 5}


def real_blocks(token_valid: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[B, L]`` bool token validity → ``[B, n]`` bool, True where the block holds at least one real token."""
    batch, length = token_valid.shape
    if length % block_size:
        raise ValueError(f"sequence length {length} is not a multiple of block_size {block_size}; pad it first.")
    return token_valid.view(batch, length // block_size, block_size).any(-1)


def window_blocks(num_blocks: int, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n, n]`` bool: query block ``i`` sees key block ``j`` when ``|i - j| <= radius``."""
    index = torch.arange(num_blocks, device=device)
    return (index[:, None] - index[None, :]).abs() <= radius


def global_blocks(num_blocks: int, num_global: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n, n]`` bool: the first ``num_global`` blocks attend to every block and every block attends to them."""
    is_global = torch.arange(num_blocks, device=device) < num_global
    return is_global[:, None] | is_global[None, :]


def highest_scoring_blocks(scores: torch.Tensor, k: int, available: torch.Tensor) -> torch.Tensor:
    """Pick, per query block, the ``k`` available key blocks with the highest *positive* score (ties: the lower block
    index first).

    Args:
        scores: ``[B, n, n]`` float, ``scores[b, i, j]`` = evidence that query block ``i`` should see key block ``j``.
        k: Blocks to pick per query block (fewer are picked where fewer candidates have a positive score).
        available: ``[B, n, n]`` bool, the candidates (blocks neither padding nor already chosen).

    Returns:
        ``[B, n, n]`` bool, the chosen blocks (a subset of ``available``).
    """
    chosen = torch.zeros_like(available)
    k = min(k, scores.shape[-1])
    if k == 0:
        return chosen
    candidates = scores.float().masked_fill(~available | (scores <= 0), float("-inf"))
    # A stable sort, not topk: equal scores (link counts tie often) go to the lower block index whatever the row's
    # length, so an example's layout does not depend on how much padding its batch adds.
    values, indices = candidates.sort(dim=-1, descending=True, stable=True)
    values, indices = values[..., :k], indices[..., :k]
    return chosen.scatter_(-1, indices, torch.isfinite(values))


def random_blocks(available: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick ``k`` available key blocks per query block uniformly at random (BigBird's random pattern)."""
    device = generator.device if generator is not None else available.device
    noise = torch.rand(available.shape, generator=generator, device=device).to(available.device) + 1.0
    return highest_scoring_blocks(noise, k, available)


def ast_block_scores(ast_links: torch.Tensor, block_size: int, reverse_weight: float = 0.0) -> torch.Tensor:
    """Count AST links between blocks: the links leaving block ``i`` for block ``j``, plus ``reverse_weight`` times
    those arriving in ``i`` from ``j``.

    A link points from a token to what it depends on (a variable use to its declaration, a call to the definition, a
    closing bracket to the construct's head). A query block needs the blocks it depends on (uses → declaration) and,
    less often, the blocks that depend on it (a declaration → its far uses: a masked or renamed declaration is
    recovered from them). Forward links alone never give a declaration's block its far uses; counting reverse links
    at a fraction of a forward one does, while forward links still win ties (``docs/layout-quality.md`` measures the
    weights).

    Args:
        ast_links: ``[B, L]`` or ``[B, L, R]`` long; ``ast_links[b, p, r]`` is the index of a token that token ``p`` is
            linked to in the syntax tree, ``-1`` for none. ``L`` a multiple of ``block_size``.
        block_size: Tokens per block.
        reverse_weight: Weight of a link counted from its target's block towards its source's (0: forward only).

    Returns:
        ``[B, n, n]`` float: ``S[b, i, j]`` = links from block ``i`` to block ``j`` + ``reverse_weight`` x links from
        ``j`` to ``i``.
    """
    if ast_links.dim() == 2:
        ast_links = ast_links[..., None]
    batch, length, _ = ast_links.shape
    num_blocks = length // block_size
    valid = (ast_links >= 0) & (ast_links < length)
    source_block = (torch.arange(length, device=ast_links.device) // block_size)[None, :, None]
    target_block = ast_links.clamp(0, length - 1) // block_size
    pair = (source_block * num_blocks + target_block).masked_fill(~valid, 0).reshape(batch, -1)
    counts = torch.zeros(batch, num_blocks * num_blocks, device=ast_links.device)
    counts.scatter_add_(1, pair, valid.reshape(batch, -1).float())
    counts = counts.view(batch, num_blocks, num_blocks)
    return counts + reverse_weight * counts.transpose(1, 2) if reverse_weight else counts


def _block_token_counts(input_ids: torch.Tensor, block_size: int,
                        token_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """How often each distinct id occurs in each block, without ``torch.unique``.

    Each id gets one *column*: the position of its first occurrence in the sorted row, a stand-in for an index over
    the distinct ids that keeps every shape fixed (``torch.compile`` traces it without a graph break).

    Returns:
        ``(counts [B, n, L] float32, sorted_ids [B, L])``: ``counts[b, i, c]`` = occurrences in block ``i`` of the id
        whose column is ``c`` (``sorted_ids[b, c]``); columns that are no id's first occurrence stay 0. Tokens where
        ``token_valid`` is False are not counted.
    """
    batch, length = input_ids.shape
    num_blocks = length // block_size
    sorted_ids = input_ids.sort(dim=1).values
    column = torch.searchsorted(sorted_ids, input_ids)  # [B, L]
    token_block = (torch.arange(length, device=input_ids.device) // block_size)[None, :]  # [1, L]
    ones = torch.ones(column.shape, dtype=torch.float32, device=input_ids.device)
    if token_valid is not None:
        ones = ones * token_valid
    counts = torch.zeros(batch, num_blocks * length, dtype=torch.float32, device=input_ids.device)
    counts.scatter_add_(1, token_block * length + column, ones)
    return counts.view(batch, num_blocks, length), sorted_ids


def shared_token_block_scores(
    input_ids: torch.Tensor, matchable: torch.Tensor, block_size: int, token_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-k block scores from the input itself: the tokens two blocks share, rare ones weighing most.

    ``S[b, i, j] = sum_v m(v) * c_i(v) * c_j(v) / N(v)``, where ``c_i(v)`` counts id ``v`` in block ``i``, ``N(v)`` in the
    whole input, and ``m(v)`` is 1 for ids that may be matched and 0 for
    the rest (a model's ``matchable_tokens``: identifier-like pieces, or every id but the special ones). A name used twice, once in each block, adds 1/2; ``self`` used 60 times adds 1/60 per pair of uses. A
    query block is so pointed at the far blocks that use (or define) its rarer names, the data-flow partners a
    teacher's attention finds, with nothing to install: no teacher, no corpus (``docs/layout-quality.md`` compares
    it with frequency tables).

    Args:
        input_ids: ``[B, L]`` long, ``L`` a multiple of ``block_size``.
        matchable: ``[V]`` bool (or 0/1), the ids that count.
        block_size: Tokens per block.
        token_valid: ``[B, L]`` bool, False on padding (not counted).

    Returns:
        ``[B, n, n]`` float32, symmetric.
    """
    counts, sorted_ids = _block_token_counts(input_ids, block_size, token_valid)
    weights = matchable.to(counts.device)[sorted_ids].float() / counts.sum(1).clamp(min=1)  # [B, L] per column
    return (counts * weights[:, None, :]) @ counts.transpose(1, 2)


def frequency_block_scores(
    input_ids: torch.Tensor, partner_ids: torch.Tensor, partner_weights: torch.Tensor, block_size: int
) -> torch.Tensor:
    """Top-k frequency block scores ``S[b, i, j] = sum_{p in i, q in j} C[id_p, id_q]`` from a compact table.

    ``C`` is never materialised: the table keeps, for each vocabulary id ``v``, its ``m`` strongest partners
    ``partner_ids[v]`` with weights ``partner_weights[v]`` (``C[v, u]`` = the weight if ``u`` is a partner, else 0).
    Per example the work is ``O(L * m)`` lookups plus one ``[n, L] @ [L, n]`` product (one column per distinct id).

    Args:
        input_ids: ``[B, L]`` long, ``L`` a multiple of ``block_size``.
        partner_ids: ``[V, m]`` long vocabulary ids (any value for unused slots whose weight is 0).
        partner_weights: ``[V, m]`` float, >= 0.
        block_size: Tokens per block.

    Returns:
        ``[B, n, n]`` float32.
    """
    batch, length = input_ids.shape
    num_partners = partner_ids.shape[-1]
    counts, sorted_ids = _block_token_counts(input_ids, block_size)
    token_block = (torch.arange(length, device=input_ids.device) // block_size)[None, :]  # [1, L]
    partners = partner_ids[input_ids].reshape(batch, length * num_partners)  # [B, L * m]
    slot = torch.searchsorted(sorted_ids, partners).clamp(max=length - 1)
    present = sorted_ids.gather(1, slot) == partners
    weights = partner_weights[input_ids].reshape(batch, -1).float() * present
    # pulls[b, i, c] = sum over tokens p in block i of C[id_p, the id of column c]
    pulls = torch.zeros(batch, counts.shape[1] * length, dtype=torch.float32, device=input_ids.device)
    pulls.scatter_add_(1, token_block.repeat_interleave(num_partners, 1) * length + slot, weights)
    return pulls.view(counts.shape) @ counts.transpose(1, 2)


@dataclass
class BlockLayout:
    """The block-sparse attention pattern of one batch.

    Attributes:
        block_mask: ``[B, n, n]`` bool, ``block_mask[b, i, j]`` = query block ``i`` attends to key block ``j``.
        token_valid: ``[B, L]`` bool, False on padding tokens (masked as keys).
        block_size: Tokens per block; ``L = n * block_size``.
        sources: ``[B, n, n]`` int8, which pattern selected each block (:data:`PATTERN_CODES`; 0 = none).
        window_radius: The window pattern's radius.
        num_global_blocks: Leading blocks that are global (their rows and columns are all selected).
        num_extra_blocks: Budget of the score-chosen patterns (top-k + AST + random) per query block.

    ``block_mask`` is the union of the structured parts the sparse kernel reads directly: global columns, the window
    band, and at most ``num_extra_blocks`` extra blocks per row (:meth:`extra_blocks`).
    """

    block_mask: torch.Tensor
    token_valid: torch.Tensor
    block_size: int
    sources: torch.Tensor
    window_radius: int
    num_global_blocks: int
    num_extra_blocks: int
    _memo: dict = field(default_factory=dict, repr=False)

    def memo(self, name: str, compute):
        """``compute()``, computed once per layout: derived tensors are built once per forward, not once per layer."""
        if name not in self._memo:
            self._memo[name] = compute()
        return self._memo[name]

    @property
    def num_blocks(self) -> int:
        return self.block_mask.shape[-1]

    @property
    def seq_len(self) -> int:
        return self.token_valid.shape[-1]

    def _kv_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        def compute():
            kv_num_blocks = self.block_mask.sum(-1, dtype=torch.int32)
            # Stable descending sort of the bool row: chosen blocks first, in ascending block order.
            kv_indices = torch.argsort(self.block_mask.to(torch.int8), dim=-1, descending=True, stable=True)
            return kv_num_blocks, kv_indices.to(torch.int32)

        return self.memo("kv", compute)

    @property
    def real_blocks(self) -> torch.Tensor:
        """``[B, n]`` bool: blocks holding at least one real token."""
        return self.memo("real_blocks", lambda: real_blocks(self.token_valid, self.block_size))

    @property
    def max_sparse_blocks(self) -> int:
        """Upper bound on the key blocks of any non-global query block."""
        window = min(2 * self.window_radius + 1, self.num_blocks)
        return min(window + self.num_global_blocks + self.num_extra_blocks, self.num_blocks)

    def extra_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The score-chosen (top-k, AST, random) key blocks of each query block.

        Returns:
            ``(indices [B, n, E] long, used [B, n, E] bool)`` with ``E = num_extra_blocks``; unused slots hold 0.
        """

        def compute():
            extra = self.sources >= PATTERN_CODES["top-k"]
            count = self.num_extra_blocks
            order = torch.argsort(extra.to(torch.int8), dim=-1, descending=True, stable=True)[..., :count]
            used = torch.arange(count, device=extra.device) < extra.sum(-1, keepdim=True)
            return order.masked_fill(~used, 0), used

        return self.memo("extra_blocks", compute)

    @property
    def kv_num_blocks(self) -> torch.Tensor:
        """``[B, n]`` int32: number of key blocks of each query block."""
        return self._kv_tensors()[0]

    @property
    def kv_indices(self) -> torch.Tensor:
        """``[B, n, n]`` int32: the key blocks of each query block, ascending, in the first ``kv_num_blocks`` slots."""
        return self._kv_tensors()[1]

    def density(self) -> float:
        """Fraction of (real query block, real key block) pairs that are computed."""
        real = self.real_blocks
        pairs = (real[:, :, None] & real[:, None, :]).sum()
        return float(self.block_mask.sum() / pairs.clamp(min=1))

    def token_mask(self, query_blocks: slice = slice(None)) -> torch.Tensor:
        """Dense ``[B, Lq, L]`` bool token mask (True = attend) for the given query blocks (all by default).

        ``O(L^2)`` memory: for the reference backends and tests, not for long inputs.
        """
        rows = self.block_mask[:, query_blocks]
        size = self.block_size
        return rows.repeat_interleave(size, 1).repeat_interleave(size, 2) & self.token_valid[:, None, :]

    def to_block_mask(self, tile: int | None = None, length: int | None = None, for_backward: bool = True):
        """A FlexAttention ``BlockMask`` ``[B, 1, length, length]`` whose first ``L`` rows and columns equal
        :meth:`token_mask` (heads broadcast; the rows and columns past ``L`` attend nothing and are never attended).

        Args:
            tile: The BlockMask's block size, a multiple of ``block_size`` (default ``block_size``). FlexAttention's
                GPU kernel needs it divisible by its tiles (up to 128), so the attention backend passes 128 or a
                multiple of ``block_size`` above it; the layout's own blocks are resolved inside ``mask_mod``.
            length: Sequence length of the mask, a multiple of ``tile`` >= ``L`` (default ``L`` rounded up to
                ``tile``): the backend pads to a few reused lengths so that a static-shape compile is reused.
            for_backward: Also build the transposed (query-block) indices the backward pass reads.

        A ``tile x tile`` tile that the layout selects entirely, over real keys only, is a *full* block (``mask_mod``
        is skipped there); a tile it selects in part is a *partial* block (``mask_mod`` runs on its scores); the
        rest are skipped.
        """
        from torch.nn.attention.flex_attention import BlockMask

        size, seq_len = self.block_size, self.seq_len
        tile = size if tile is None else tile
        if tile % size:
            raise ValueError(f"the BlockMask tile ({tile}) must be a multiple of the layout's block_size ({size}).")
        length = -(-seq_len // tile) * tile if length is None else length
        if length % tile or length < seq_len:
            raise ValueError(f"the BlockMask length ({length}) must be a multiple of its tile ({tile}) and at least "
                             f"the layout's length ({seq_len}).")
        extra = (length - seq_len) // size
        block_mask = torch.nn.functional.pad(self.block_mask, (0, extra, 0, extra))  # [B, N, N], padding: False
        token_valid = torch.nn.functional.pad(self.token_valid, (0, length - seq_len))  # [B, length]
        batch, tiles, per_tile = block_mask.shape[0], length // tile, tile // size
        selected = block_mask.view(batch, tiles, per_tile, tiles, per_tile)
        keys_real = token_valid.view(batch, tiles, tile).all(-1)  # [B, T]: every key of the tile is real
        full = selected.all(4).all(2) & keys_real[:, None, :]  # [B, T, T]
        partial = selected.any(4).any(2) & ~full

        def kv_format(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # Stable descending sort of the bool row: chosen tiles first, in ascending order. [B, 1, T], [B, 1, T, T]
            order = torch.argsort(chosen.to(torch.int8), dim=-1, descending=True, stable=True)
            return chosen.sum(-1, dtype=torch.int32)[:, None], order.to(torch.int32)[:, None]

        def sasa_mask_mod(b, h, q_idx, kv_idx):
            # Eager (uncompiled) flex ignores kv_indices and uses only this function, so it states the whole pattern.
            return block_mask[b, q_idx // size, kv_idx // size] & token_valid[b, kv_idx]

        (kv_num, kv_indices), (full_num, full_indices) = kv_format(partial), kv_format(full)
        return BlockMask.from_kv_blocks(
            kv_num, kv_indices, full_kv_num_blocks=full_num, full_kv_indices=full_indices, BLOCK_SIZE=tile,
            mask_mod=sasa_mask_mod, seq_lengths=(length, length), compute_q_blocks=for_backward,
        )


def build_layout(
    token_valid: torch.Tensor,
    block_size: int,
    window_radius: int = 1,
    num_global_blocks: int = 1,
    num_topk_blocks: int = 0,
    num_ast_blocks: int = 0,
    num_random_blocks: int = 0,
    topk_scores: torch.Tensor | None = None,
    ast_scores: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> BlockLayout:
    """Compose window ∪ global ∪ top-k ∪ AST ∪ random into one :class:`BlockLayout`.

    Later patterns only pick blocks the earlier ones left free, so budgets are never spent on duplicates: top-k picks
    among blocks outside window/global, AST among those outside window/global/top-k, random among the rest. Patterns
    whose scores are ``None`` (or whose budget is 0) are skipped.

    Args:
        token_valid: ``[B, L]`` bool (or 0/1) attention mask, ``L`` a multiple of ``block_size``.
        block_size: Tokens per block.
        window_radius, num_global_blocks, num_topk_blocks, num_ast_blocks, num_random_blocks: Budgets (see
            :class:`SasaConfig`).
        topk_scores: ``[B, n, n]`` top-k frequency block scores, or ``None``.
        ast_scores: ``[B, n, n]`` AST link block scores, or ``None``.
        generator: RNG for the random blocks (``None`` = torch's global RNG).
    """
    token_valid = token_valid.bool()
    real = real_blocks(token_valid, block_size)
    num_blocks = real.shape[-1]
    device = token_valid.device
    allowed = real[:, :, None] & real[:, None, :]

    sources = torch.zeros(allowed.shape, dtype=torch.int8, device=device)

    def add(selected: torch.Tensor, pattern: str) -> None:
        sources.masked_fill_(selected & (sources == 0), PATTERN_CODES[pattern])

    add(allowed & global_blocks(num_blocks, num_global_blocks, device), "global")
    add(allowed & window_blocks(num_blocks, window_radius, device), "window")
    num_extra = 0
    for pattern, scores, k in (("top-k", topk_scores, num_topk_blocks), ("ast", ast_scores, num_ast_blocks)):
        if scores is None or k == 0:
            continue
        expected = (token_valid.shape[0], num_blocks, num_blocks)
        if tuple(scores.shape) != expected:
            raise ValueError(f"block scores must have shape {expected} (batch, blocks, blocks), got {tuple(scores.shape)}.")
        add(highest_scoring_blocks(scores.to(device), k, allowed & (sources == 0)), pattern)
        num_extra += k
    if num_random_blocks:
        add(random_blocks(allowed & (sources == 0), num_random_blocks, generator), "random")
        num_extra += num_random_blocks

    return BlockLayout(
        block_mask=sources > 0,
        token_valid=token_valid,
        block_size=block_size,
        sources=sources,
        window_radius=window_radius,
        num_global_blocks=min(num_global_blocks, num_blocks),
        num_extra_blocks=min(num_extra, num_blocks),
    )
