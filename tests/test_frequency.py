"""Top-k frequency preprocessing, end to end on a tiny model whose attention is known."""

import json

import pytest
import torch
from transformers import RobertaConfig, RobertaModel

from conftest import SNIPPETS, tiny_config
from sasa import SasaModel, SasaTokenizer
from sasa.cli import main
from sasa.frequency import (
    PairCounts,
    identifier_frequency_table,
    identifier_vocabulary,
    install_identifier_tokens,
    load_frequency_table,
    read_corpus,
)


def test_pair_counts_keep_the_most_frequent_partners_with_pick_fractions():
    counts = PairCounts(vocab_size=10)
    counts.add(torch.tensor([3, 3, 3, 3, 5]), torch.tensor([7, 7, 2, 9, 1]))
    counts.add(torch.tensor([3]), torch.tensor([2]))
    ids, weights = counts.table(partners=2)
    assert ids[3].tolist() == [2, 7]  # 2 and 7 both twice: ties break towards the smaller id
    assert weights[3].tolist() == pytest.approx([2 / 5, 2 / 5])  # 3 made 5 picks
    assert ids[5, 0] == 1 and weights[5].tolist() == pytest.approx([1.0, 0.0])
    assert weights[[0, 1, 2, 4]].eq(0).all()


def single_token_id(tokenizer, word: str) -> int:
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, f"{word!r} is not one token in the test vocabulary"
    return ids[0]


def attention_pinned_model(vocab_size: int, query_id: int, key_id: int) -> RobertaModel:
    """A one-head RoBERTa in which every ``query_id`` token attends (almost) only to ``key_id`` tokens."""
    config = RobertaConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                           intermediate_size=16, max_position_embeddings=514, type_vocab_size=1)
    model = RobertaModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        embeddings = model.embeddings
        generator = torch.Generator().manual_seed(0)
        words = torch.randn(vocab_size, 16, generator=generator) * 0.1
        words[:, :4] = 0  # dims 0..3 are reserved for the two pinned tokens
        embeddings.word_embeddings.weight.copy_(words - words.mean(1, keepdim=True) * (words != 0))
        embeddings.word_embeddings.weight[query_id] = torch.tensor([1.0, -1.0] + [0.0] * 14)
        embeddings.word_embeddings.weight[key_id] = torch.tensor([0.0, 0.0, 1.0, -1.0] + [0.0] * 12)
        embeddings.LayerNorm.weight.fill_(1.0)
        attention = model.encoder.layer[0].attention.self
        attention.query.weight[0, 0] = 10.0  # query_id → direction 0
        attention.key.weight[0, 2] = 10.0  # key_id → direction 0
    return model


def test_topk_command_counts_a_pinned_pair_and_the_table_selects_its_blocks(tmp_path, bpe_dir):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    query_id, key_id = single_token_id(tokenizer, "return"), single_token_id(tokenizer, "result")
    teacher = attention_pinned_model(len(tokenizer), query_id, key_id)
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    # The student asks for a table it does not have yet: no top-k blocks until the command installs one.
    student = SasaModel(tiny_config(vocab_size=len(tokenizer), num_topk_blocks=1, num_ast_blocks=0,
                                    topk_source="table"))
    student.save_pretrained(tmp_path / "student")

    output = tmp_path / "table.safetensors"
    assert main(["topk", "--model", str(tmp_path / "teacher"), "--files", SNIPPETS, "--output", str(output),
                 "--top-k", "1", "--partners", "4", "--batch-size", "3", "--device", "cpu",
                 "--install-into", str(tmp_path / "student")]) == 0

    ids, weights = load_frequency_table(output)
    assert ids.shape == (len(tokenizer), 4)
    # "return" picks "result" wherever both occur (the other picks come from snippets without "result")
    assert ids[query_id, 0] == key_id and weights[query_id, 0] > 0.5 > weights[query_id, 1]
    installed = SasaModel.from_pretrained(tmp_path / "student")
    assert torch.equal(installed.frequency_table.partner_ids, ids)

    filler = single_token_id(tokenizer, "value")
    input_ids = torch.full((1, 96), filler)
    input_ids[0, 0] = tokenizer.bos_token_id
    input_ids[0, 12], input_ids[0, 85] = query_id, key_id  # block 1 and block 10 (block size 8)
    with_table = installed.layout(input_ids).block_mask[0]
    without_table = student.layout(input_ids).block_mask[0]
    # Query block 1 (holding "return") gains exactly the key block holding "result", far outside its window.
    assert (with_table[1] & ~without_table[1]).nonzero().flatten().tolist() == [10]


def test_read_corpus_reads_files_directories_and_jsonl(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text(json.dumps({"func": "y = 2"}) + "\n\n" + json.dumps({"func": "z"}))
    (tmp_path / "c.bin").write_bytes(b"\xff\xfeok")
    texts = list(read_corpus([str(tmp_path)], column="func"))
    assert texts == ["x = 1\n", "\ufffd\ufffdok", "y = 2", "z"]


def test_identifier_table_weighs_names_by_rarity_and_ignores_punctuation(tokenizer):
    texts = ["x = total + result", "y = result", "z = result", "w = value + result"]
    ids, weights, documents = identifier_frequency_table(texts, tokenizer, progress=False)
    assert documents == 4 and ids.shape == weights.shape == (len(tokenizer), 1)
    assert torch.equal(ids[:, 0], torch.arange(len(tokenizer)))  # every id is its own (only) partner
    total, result, value = (single_token_id(tokenizer, word) for word in ("total", "result", "value"))
    equals = tokenizer(" =", add_special_tokens=False)["input_ids"][0]
    # idf normalised to [0, 1]: "result" is in all 4 texts (weight 0), "total" and "value" in one ((log 5/2) / log 5)
    assert weights[result, 0] == 0 and weights[total, 0] == pytest.approx(weights[value, 0])
    assert weights[total, 0].item() == pytest.approx(torch.log(torch.tensor(5 / 2)) / torch.log(torch.tensor(5.0)))
    assert weights[equals, 0] == 0 and weights[tokenizer.all_special_ids, 0].eq(0).all()
    seen = {i for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in ids}
    unseen = [i for i in identifier_vocabulary(tokenizer).nonzero().flatten().tolist() if i not in seen][:1]
    assert weights[unseen, 0].tolist() == [1.0]  # a name the corpus never saw is as specific as names get
    with pytest.raises(ValueError, match="empty"):
        identifier_frequency_table([], tokenizer, progress=False)


def test_topk_command_without_a_teacher_points_blocks_at_a_shared_rare_name(tmp_path, bpe_dir):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    student = SasaModel(tiny_config(vocab_size=len(tokenizer), num_topk_blocks=1, num_ast_blocks=0,
                                    topk_source="table"))
    student.save_pretrained(tmp_path / "student")
    tokenizer.save_pretrained(tmp_path / "student")
    output = tmp_path / "table.safetensors"
    assert main(["topk", "--files", SNIPPETS, "--output", str(output), "--install-into", str(tmp_path / "student")]) == 0
    ids, weights = load_frequency_table(output)
    installed = SasaModel.from_pretrained(tmp_path / "student")
    assert torch.equal(installed.frequency_table.partner_ids, ids) and installed.config.frequency_partners == 1
    assert installed.config.topk_source == "table"

    rare, common = single_token_id(tokenizer, "total"), single_token_id(tokenizer, "return")
    assert weights[rare, 0] > weights[common, 0] > 0  # "total" is in one snippet, "return" in most
    filler = tokenizer(" =", add_special_tokens=False)["input_ids"][0]  # punctuation: weight 0
    input_ids = torch.full((1, 96), filler)
    input_ids[0, 0] = tokenizer.bos_token_id
    input_ids[0, 12], input_ids[0, 85] = rare, rare  # block 1 and block 10 (block size 8)
    gained = installed.layout(input_ids).block_mask[0] & ~student.layout(input_ids).block_mask[0]
    assert gained[1].nonzero().flatten().tolist() == [10] and gained[10].nonzero().flatten().tolist() == [1]


def test_topk_command_needs_a_teacher_or_a_tokenizer(tmp_path):
    with pytest.raises(SystemExit, match="--tokenizer"):
        main(["topk", "--files", SNIPPETS, "--output", str(tmp_path / "t.safetensors")])


def test_identifier_tokens_are_what_the_input_source_matches(tokenizer):
    model = SasaModel(tiny_config(vocab_size=len(tokenizer)))
    default = model.frequency_table.matchable_tokens.clone()
    assert not default[[tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id]].any()
    assert default.sum() == len(tokenizer) - 3  # every other id, until the tokenizer's identifiers are installed
    installed = install_identifier_tokens(model, tokenizer)
    assert torch.equal(model.frequency_table.matchable_tokens, installed)
    assert torch.equal(installed, identifier_vocabulary(tokenizer))
    name, punctuation = single_token_id(tokenizer, "result"), tokenizer(" =", add_special_tokens=False)["input_ids"][0]
    assert installed[name] and not installed[punctuation]
