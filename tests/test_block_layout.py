import pytest
import torch

from sasa.block_layout import (
    PATTERN_CODES,
    ast_block_scores,
    build_layout,
    frequency_block_scores,
    global_blocks,
    highest_scoring_blocks,
    real_blocks,
    shared_token_block_scores,
    window_blocks,
)


def valid_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def test_window_is_a_band_of_radius_blocks():
    window = window_blocks(6, 1)
    assert window[2].nonzero().flatten().tolist() == [1, 2, 3]
    assert window[0].nonzero().flatten().tolist() == [0, 1]
    assert window_blocks(6, 0).equal(torch.eye(6, dtype=torch.bool))


def test_global_blocks_attend_to_and_from_everything():
    pattern = global_blocks(5, 2)
    assert pattern[:2].all() and pattern[:, :2].all()
    assert not pattern[2:, 2:].any()


def test_highest_scoring_blocks_picks_top_positive_available():
    scores = torch.tensor([[[0.0, 5.0, 1.0, 3.0, -2.0]]])
    available = torch.tensor([[[True, True, True, False, True]]])
    chosen = highest_scoring_blocks(scores, 2, available)
    assert chosen[0, 0].nonzero().flatten().tolist() == [1, 2]  # 3 is taken, 0 and 4 have no positive score
    assert highest_scoring_blocks(scores, 5, available)[0, 0].sum() == 2


def test_padding_blocks_are_never_selected_and_get_no_keys():
    token_valid = valid_mask([40, 17], 48)  # block 8: example 1 has real blocks 0..2
    scores = torch.rand(2, 6, 6) + 0.1
    layout = build_layout(token_valid, 8, num_topk_blocks=2, num_ast_blocks=2, num_random_blocks=1,
                          topk_scores=scores, ast_scores=scores.flip(-1))
    real = real_blocks(token_valid, 8)
    assert not (layout.block_mask & ~real[:, None, :]).any()
    assert not (layout.block_mask & ~real[:, :, None]).any()
    assert layout.kv_num_blocks[1, 3:].eq(0).all()


def test_union_respects_budgets_and_never_duplicates():
    torch.manual_seed(0)
    token_valid = valid_mask([200, 131], 208)
    n = 208 // 8
    layout = build_layout(token_valid, 8, window_radius=1, num_global_blocks=1, num_topk_blocks=3,
                          num_ast_blocks=2, num_random_blocks=1, topk_scores=torch.rand(2, n, n),
                          ast_scores=torch.rand(2, n, n))
    counts = layout.kv_num_blocks
    assert counts[:, 1:].max() <= layout.max_sparse_blocks == 3 + 1 + 3 + 2 + 1
    indices = layout.kv_indices
    for b in range(2):
        for i in range(n):
            used = indices[b, i, : counts[b, i]].tolist()
            assert len(set(used)) == len(used) == layout.block_mask[b, i].sum()
            assert used == sorted(used) and layout.block_mask[b, i, used].all()


def test_top_k_and_ast_pick_outside_window_and_global():
    token_valid = torch.ones(1, 80, dtype=torch.bool)
    topk = torch.zeros(1, 10, 10)
    topk[0, 5, 6] = 9.0  # inside the window: must not use the budget
    topk[0, 5, 9] = 1.0
    ast = torch.zeros(1, 10, 10)
    ast[0, 5, 9] = 4.0  # already chosen by top-k
    ast[0, 5, 2] = 1.0
    layout = build_layout(token_valid, 8, num_topk_blocks=1, num_ast_blocks=1, topk_scores=topk, ast_scores=ast)
    assert layout.block_mask[0, 5].nonzero().flatten().tolist() == [0, 2, 4, 5, 6, 9]


def test_token_mask_matches_blocks_and_masks_padding_keys():
    token_valid = valid_mask([21], 24)
    layout = build_layout(token_valid, 8, window_radius=0, num_global_blocks=0)
    mask = layout.token_mask()[0]
    assert mask[0, :8].all() and not mask[0, 8:].any()
    assert mask[20, 16:21].all() and not mask[20, 21:].any()  # padding keys masked inside a real block
    assert mask[22, 16:21].all()  # padding queries inside a real block still attend


def test_density_counts_real_block_pairs():
    layout = build_layout(torch.ones(1, 64, dtype=torch.bool), 8, window_radius=0, num_global_blocks=0)
    assert layout.density() == pytest.approx(1 / 8)


def test_random_blocks_are_reproducible_with_a_seeded_generator():
    token_valid = torch.ones(2, 256, dtype=torch.bool)

    def make(seed):
        return build_layout(token_valid, 8, num_random_blocks=2, generator=torch.Generator().manual_seed(seed)).block_mask

    assert make(3).equal(make(3))
    assert not make(3).equal(make(4))
    assert (make(3).sum(-1)[:, 2:-1] == 3 + 1 + 2).all()  # window 3 + global 1 + 2 random, away from the edges


def test_ast_block_scores_count_links_from_the_query_block_to_the_key_block():
    links = torch.full((1, 16, 2), -1)
    links[0, 1, 0] = 12  # block 0 -> block 3
    links[0, 2, 1] = 13  # block 0 -> block 3
    links[0, 9, 0] = 5  # block 2 -> block 1
    links[0, 10, 0] = 99  # out of range: ignored
    scores = ast_block_scores(links, 4)
    expected = torch.zeros(4, 4)
    expected[0, 3] = 2  # block 0 depends on block 3: its queries get key block 3, not the other way round
    expected[2, 1] = 1
    assert scores[0].equal(expected)
    # A reverse weight also scores the target's block towards the linking one, forward links still counting more.
    both = ast_block_scores(links, 4, reverse_weight=0.25)[0]
    expected[3, 0], expected[1, 2] = 0.5, 0.25
    assert both.equal(expected)


def test_reverse_weight_lets_a_declaration_block_reach_its_far_uses_in_the_model_layout():
    from sasa import SasaConfig, SasaModel

    links = torch.full((1, 64, 1), -1)
    links[0, 60, 0] = 40  # a use in block 7 depends on a declaration in block 5 (block 4 of 8 is far from both)
    links[0, 61, 0] = 41
    common = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  block_size=8, window_radius=0, num_global_blocks=1, num_topk_blocks=0, num_ast_blocks=1)
    input_ids = torch.full((1, 64), 5)
    forward = SasaModel(SasaConfig(**common, ast_reverse_weight=0.0)).layout(input_ids, ast_links=links)
    both = SasaModel(SasaConfig(**common)).layout(input_ids, ast_links=links)
    assert forward.block_mask[0, 7, 5] and not forward.block_mask[0, 5, 7]
    assert both.block_mask[0, 7, 5] and both.block_mask[0, 5, 7]


def test_frequency_block_scores_equal_the_dense_vocabulary_matrix():
    torch.manual_seed(1)
    vocab, partners, block = 30, 4, 4
    partner_ids = torch.randint(0, vocab, (vocab, partners))
    partner_weights = torch.rand(vocab, partners)
    dense = torch.zeros(vocab, vocab)
    for v in range(vocab):
        for slot in range(partners):
            dense[v, partner_ids[v, slot]] += partner_weights[v, slot]
    input_ids = torch.randint(0, vocab, (2, 24))
    scores = frequency_block_scores(input_ids, partner_ids, partner_weights, block)
    for b in range(2):
        token_scores = dense[input_ids[b]][:, input_ids[b]]  # C[id_p, id_q]
        expected = token_scores.view(6, block, 6, block).sum((1, 3))
        torch.testing.assert_close(scores[b], expected)


def test_block_scores_of_the_wrong_shape_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        build_layout(torch.ones(1, 32, dtype=torch.bool), 8, num_topk_blocks=1, topk_scores=torch.ones(1, 3, 3))


def test_length_must_be_a_multiple_of_the_block_size():
    with pytest.raises(ValueError, match="multiple of block_size"):
        build_layout(torch.ones(1, 30, dtype=torch.bool), 8)


def test_kv_format_matches_flex_block_mask():
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    token_valid = valid_mask([64, 40], 64)
    layout = build_layout(token_valid, 8, num_topk_blocks=2, topk_scores=torch.rand(2, 8, 8))
    dense = flex.BlockMask.from_kv_blocks(layout.kv_num_blocks[:, None], layout.kv_indices[:, None], BLOCK_SIZE=8,
                                          seq_lengths=(64, 64)).to_dense()
    assert dense[:, 0].bool().equal(layout.block_mask)


def test_an_examples_layout_does_not_depend_on_its_batchs_padding():
    """Tied scores (link counts tie often) are broken by block index, not by the row's length."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.ones(1, 6, 6)  # every candidate tied
    alone = build_layout(torch.ones(1, 48, dtype=torch.bool), 8, num_ast_blocks=2, ast_scores=scores)
    token_valid = torch.zeros(2, 128, dtype=torch.bool)
    token_valid[0, :48] = True
    token_valid[1] = True
    padded_scores = torch.zeros(2, 16, 16)
    padded_scores[0, :6, :6] = scores[0]
    padded_scores[1] = torch.randint(0, 3, (16, 16), generator=generator).float()
    batched = build_layout(token_valid, 8, num_ast_blocks=2, ast_scores=padded_scores)
    assert torch.equal(batched.block_mask[0, :6, :6], alone.block_mask[0])
    assert not batched.block_mask[0, :6, 6:].any()
    assert (alone.sources[0] == PATTERN_CODES["ast"]).sum() > 0


def test_shared_token_scores_weigh_each_shared_token_by_its_rarity_in_the_input():
    # blocks of 4: token 7 occurs twice (blocks 0 and 2), token 9 four times (blocks 0, 1, 2, 2), token 5 is not
    # matchable, padding (id 1) at the end is not counted
    input_ids = torch.tensor([[7, 9, 5, 5, 9, 3, 3, 3, 7, 9, 9, 5, 1, 1, 1, 1]])
    matchable = torch.ones(12, dtype=torch.bool)
    matchable[[1, 5]] = False
    valid = input_ids != 1
    scores = shared_token_block_scores(input_ids, matchable, 4, valid)[0]
    # S[i, j] = sum over matchable ids v of count_i(v) * count_j(v) / N(v), with N the occurrences in the input
    # (token 3 occurs three times, all in block 1: it scores block 1 against itself only)
    expected = torch.tensor([
        [1 / 2 + 1 / 4, 1 / 4, 1 / 2 + 2 / 4, 0.0],
        [1 / 4, 1 / 4 + 9 / 3, 2 / 4, 0.0],
        [1 / 2 + 2 / 4, 2 / 4, 1 / 2 + 4 / 4, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ])
    torch.testing.assert_close(scores, expected)
    assert torch.equal(scores, scores.T)


def test_shared_token_scores_point_a_block_at_the_far_block_with_its_rare_name():
    common, rare, filler = 10, 11, 12
    input_ids = torch.full((1, 64), filler)
    input_ids[0, ::3] = common  # everywhere
    input_ids[0, 9], input_ids[0, 60] = rare, rare  # block 1 and block 7 (blocks of 8)
    matchable = torch.ones(20, dtype=torch.bool)
    matchable[filler] = False
    scores = shared_token_block_scores(input_ids, matchable, 8)
    layout = build_layout(torch.ones(1, 64, dtype=torch.bool), 8, num_topk_blocks=1, topk_scores=scores)
    assert layout.extra_blocks()[0][0, 1, 0] == 7 and layout.extra_blocks()[0][0, 7, 0] == 1


def flex_effective_mask(block_mask) -> torch.Tensor:
    """``[B, Lq, Lk]`` bool: what a compiled FlexAttention attends under ``block_mask``: every score of a *full* tile,
    ``mask_mod`` on the scores of a *partial* tile, nothing elsewhere."""
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    batch, _, q_len, kv_len = block_mask.shape
    tile = block_mask.BLOCK_SIZE[0]

    def tiles(num, indices):  # [B, 1, T], [B, 1, T, T] -> [B, T, T] bool
        slots = torch.arange(indices.shape[-1]) < num[..., None]
        return torch.zeros(indices.shape, dtype=torch.bool).scatter_(-1, indices.long(), slots)[:, 0]

    def tokens(tile_mask):
        return tile_mask.repeat_interleave(tile, 1).repeat_interleave(tile, 2)

    partial = tiles(block_mask.kv_num_blocks, block_mask.kv_indices)
    full = tiles(block_mask.full_kv_num_blocks, block_mask.full_kv_indices)
    assert not (partial & full).any()
    mask_mod = flex.create_mask(block_mask.mask_mod, batch, 1, q_len, kv_len, device="cpu")[:, 0]
    return tokens(full) | (tokens(partial) & mask_mod), full


@pytest.mark.parametrize("block_size", [32, 64, 128])
def test_block_mask_at_kernel_tiles_equals_the_token_mask(block_size):
    """FlexAttention's GPU kernel needs BlockMask blocks of its tile size (128): SASA's blocks of 32/64/128 tokens are
    resolved inside mask_mod, tiles the layout selects entirely are marked full (mask_mod skipped there), and the
    padding up to a reused length attends nothing."""
    width, length = 8 * block_size, 10 * 128 + max(block_size, 128)
    token_valid = valid_mask([8 * block_size, 5 * block_size - 3], width)
    n = width // block_size
    generator = torch.Generator().manual_seed(block_size)
    layout = build_layout(token_valid, block_size, num_global_blocks=1, window_radius=1, num_topk_blocks=1,
                          num_ast_blocks=2, topk_scores=torch.rand(2, n, n, generator=generator),
                          ast_scores=torch.rand(2, n, n, generator=generator) - 0.3)
    effective, full = flex_effective_mask(layout.to_block_mask(tile=max(block_size, 128), length=length))
    assert effective[:, :width, :width].equal(layout.token_mask())
    assert not effective[:, width:].any() and not effective[:, :, width:].any()
    if block_size >= 64:
        assert full.any()  # window tiles of 2 blocks of 64, every selected block of 128 with real keys only


def test_block_mask_tile_must_hold_whole_blocks():
    layout = build_layout(valid_mask([96], 96), 32)
    with pytest.raises(ValueError, match="multiple of the layout's block_size"):
        layout.to_block_mask(tile=48)
    with pytest.raises(ValueError, match="at least the layout's length"):
        layout.to_block_mask(tile=32, length=64)
