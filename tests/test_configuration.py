import pytest

from sasa import SasaConfig
from sasa.configuration_sasa import SASA_AUTO_MAP


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("block_size", 0),
        ("block_size", 7.5),
        ("window_radius", -1),
        ("num_global_blocks", -2),
        ("num_topk_blocks", -1),
        ("num_ast_blocks", "3"),
        ("num_random_blocks", -1),
        ("frequency_partners", -4),
        ("attention_probs_dropout_prob", 1.5),
        ("ast_reverse_weight", -0.5),
        ("ast_reverse_weight", float("nan")),
        ("ast_reverse_weight", "0.25"),
    ],
)
def test_bad_value_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SasaConfig(**{field: value})


def test_hidden_size_must_divide_into_heads():
    with pytest.raises(ValueError, match="num_attention_heads"):
        SasaConfig(hidden_size=100, num_attention_heads=12)


def test_position_table_must_leave_room_after_roberta_offset():
    with pytest.raises(ValueError, match="max_position_embeddings"):
        SasaConfig(max_position_embeddings=2, pad_token_id=1)


def test_defaults_follow_the_paper_the_layout_benchmark_and_roberta():
    config = SasaConfig()
    assert (config.block_size, config.window_radius, config.num_global_blocks) == (32, 1, 1)
    # chosen by benchmarks/quality/layout_quality.py: the extra budget of 3 blocks split 2 AST + 1 top-k
    assert (config.num_topk_blocks, config.num_ast_blocks, config.num_random_blocks) == (1, 2, 0)
    assert config.ast_reverse_weight == 0.25  # and by mlm_probe.py: a declaration's block also gets its far uses
    assert config.max_sequence_length == 2048
    assert config.pad_token_id == 1 and config.tie_word_embeddings


def test_round_trip_keeps_sparse_fields_and_full_auto_map(tmp_path):
    SasaConfig(block_size=64, num_ast_blocks=5, window_radius=2).save_pretrained(tmp_path)
    loaded = SasaConfig.from_pretrained(tmp_path)
    assert (loaded.block_size, loaded.num_ast_blocks, loaded.window_radius) == (64, 5, 2)
    assert loaded.auto_map == SASA_AUTO_MAP
