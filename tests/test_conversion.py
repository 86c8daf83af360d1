"""RoBERTa-family checkpoints convert to SASA: with a layout that covers every block, outputs equal RoBERTa's."""

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM, RobertaModel

from sasa import SasaConfig, SasaForMaskedLM, SasaModel
from sasa.block_layout import PATTERN_CODES
from sasa.cli import main
from sasa.configuration_sasa import LAYOUT_FIELDS, layout_defaults
from sasa.conversion import convert_roberta_model, extend_position_embeddings
from sasa.frequency import identifier_vocabulary

FULL_COVER = dict(block_size=32, window_radius=64, num_global_blocks=1)  # window >= number of blocks: dense


def tiny_roberta_config() -> RobertaConfig:
    return RobertaConfig(vocab_size=150, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)


def roberta_inputs(lengths, vocab_size=150, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(3, vocab_size, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, 0], input_ids[row, length - 1] = 0, 2
        input_ids[row, length:] = 1
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def test_position_table_is_copied_along_with_the_roberta_offset():
    table = torch.arange(10.0)[:, None].repeat(1, 2)  # rows 0, 1 reserved; trained rows 2..9
    extended = extend_position_embeddings(table, 21, offset=2)
    assert extended[:, 0].tolist() == [0, 1] + list(range(2, 10)) + list(range(2, 10)) + [2, 3, 4]
    with pytest.raises(ValueError):
        extend_position_embeddings(table, 2, offset=2)


@pytest.mark.parametrize("lengths", [[512, 300], [77], [512]])
def test_converted_model_equals_roberta_on_inputs_up_to_512_tokens(lengths):
    torch.manual_seed(0)
    roberta = RobertaModel(tiny_roberta_config()).eval()
    sasa = convert_roberta_model(roberta, max_position_embeddings=1026, head="base", **FULL_COVER).eval()
    assert isinstance(sasa, SasaModel) and sasa.config.max_sequence_length == 1024
    input_ids, attention_mask = roberta_inputs(lengths)
    real = attention_mask.bool()
    with torch.no_grad():
        expected = roberta(input_ids, attention_mask)
        for backend in ("sasa_blocks", "eager"):
            sasa.set_attn_implementation(backend)
            actual = sasa(input_ids, attention_mask)
            assert (actual.last_hidden_state - expected.last_hidden_state)[real].abs().max() <= 1e-5, backend
            assert (actual.pooler_output - expected.pooler_output).abs().max() <= 1e-5, backend


def test_converted_model_is_not_dense_with_the_default_layout():
    torch.manual_seed(0)
    roberta = RobertaModel(tiny_roberta_config()).eval()
    sasa = convert_roberta_model(roberta, max_position_embeddings=1026, head="base").eval()
    input_ids, attention_mask = roberta_inputs([512])
    with torch.no_grad():
        difference = sasa(input_ids, attention_mask).last_hidden_state - roberta(input_ids, attention_mask).last_hidden_state
    assert difference.abs().max() > 1e-3


def test_command_converts_a_masked_lm_checkpoint_that_reloads(tmp_path):
    torch.manual_seed(0)
    roberta = RobertaForMaskedLM(tiny_roberta_config()).eval()
    roberta.save_pretrained(tmp_path / "roberta")
    assert main(["convert", str(tmp_path / "roberta"), str(tmp_path / "sasa"), "--max-position-embeddings", "1026",
                 "--block-size", "32", "--window-radius", "64", "--ast-reverse-weight", "0.5"]) == 0
    sasa = SasaForMaskedLM.from_pretrained(tmp_path / "sasa").eval()
    assert sasa.config.block_size == 32 and sasa.config.max_position_embeddings == 1026
    assert sasa.config.ast_reverse_weight == 0.5
    input_ids, attention_mask = roberta_inputs([400, 200])
    real = attention_mask.bool()
    with torch.no_grad():
        expected = roberta(input_ids, attention_mask).logits
        actual = sasa(input_ids, attention_mask).logits
    assert (actual - expected)[real].abs().max() <= 1e-5
    assert sasa.lm_head.decoder.weight is sasa.sasa.embeddings.word_embeddings.weight


def test_non_roberta_checkpoints_are_refused():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                intermediate_size=64))
    with pytest.raises(ValueError, match="RoBERTa-family"):
        convert_roberta_model(bert)


def test_conversion_saves_a_sasa_tokenizer_over_the_source_vocabulary(tmp_path, bpe_dir):
    from transformers import AutoTokenizer, RobertaTokenizer

    from sasa import SasaTokenizer

    roberta_tokenizer = RobertaTokenizer.from_pretrained(bpe_dir)
    config = tiny_roberta_config()
    config.vocab_size = len(roberta_tokenizer)
    RobertaModel(config).save_pretrained(tmp_path / "roberta")
    roberta_tokenizer.save_pretrained(tmp_path / "roberta")
    assert main(["convert", str(tmp_path / "roberta"), str(tmp_path / "sasa")]) == 0
    converted = SasaConfig.from_pretrained(tmp_path / "sasa")
    assert {f: getattr(converted, f) for f in LAYOUT_FIELDS} == layout_defaults()  # the CLI follows the config
    assert converted.max_position_embeddings == SasaConfig().max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sasa")
    assert isinstance(tokenizer, SasaTokenizer) and tokenizer.model_max_length == 2048
    code = "def f(x):\n    return x\n"
    encoding = tokenizer(code, language="python")
    assert encoding["input_ids"] == roberta_tokenizer(code)["input_ids"]
    assert any(t >= 0 for row in encoding["ast_links"] for t in row)

    # The converted model's top-k block is on: it matches the source vocabulary's identifiers between blocks.
    model = SasaModel.from_pretrained(tmp_path / "sasa")
    assert torch.equal(model.frequency_table.matchable_tokens, identifier_vocabulary(tokenizer))
    code = "".join(f"def helper_{i}(value):\n    return value + {i}\n\n" for i in range(40)) + "print(helper_3)\n"
    encoding = tokenizer(code, language="python", return_tensors="pt")
    layout = model.layout(encoding["input_ids"], encoding["attention_mask"], encoding["ast_links"])
    assert (layout.sources == PATTERN_CODES["top-k"]).any()
