import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DataCollatorWithPadding, RobertaTokenizer

from conftest import read_snippet
from sasa import SasaTokenizer
from sasa.ast_relations import DEFAULT_RELATIONS

PYTHON = read_snippet("example.py")
JAVA = read_snippet("Example.java")
WIDTH = len(DEFAULT_RELATIONS)


def assert_consistent(encoding, links_in_range=True):
    """input_ids, attention_mask and ast_links agree in length; links point at real tokens of the same row."""
    ids, mask, links = encoding["input_ids"], encoding["attention_mask"], encoding["ast_links"]
    assert len(ids) == len(mask) == len(links)
    for row in links:
        assert len(row) == WIDTH
        for target in row:
            assert -1 <= target < len(ids)
            if target >= 0:
                assert mask[target] == 1


def test_reads_roberta_vocabulary_files_unchanged(bpe_dir, tokenizer):
    roberta = RobertaTokenizer.from_pretrained(bpe_dir)
    assert tokenizer(JAVA, language="java")["input_ids"] == roberta(JAVA)["input_ids"]
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)


def test_returns_ast_links_alongside_input_ids(tokenizer):
    encoding = tokenizer(PYTHON, language="python")
    assert list(encoding.keys()) == ["input_ids", "attention_mask", "ast_links"]
    assert_consistent(encoding)
    linked = sum(target >= 0 for row in encoding["ast_links"] for target in row)
    assert linked > len(encoding["input_ids"]) // 4  # many tokens carry links (names, calls, returns)
    assert all(any(row[column] >= 0 for row in encoding["ast_links"]) for column in range(WIDTH))  # every relation
    assert encoding["ast_links"][0] == [-1] * WIDTH and encoding["ast_links"][-1] == [-1] * WIDTH  # <s>, </s>


def test_links_follow_the_syntax_tree_through_bpe(bpe_dir):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir, ast_relations=("statement", "sibling"))
    source = "def f(x):\n    y = x\n    return y\n"
    encoding = tokenizer(source, language="python", return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    text_of = [source[a:b] for a, b in encoding["offset_mapping"]]
    returned = text_of.index("return")
    statement_head = encoding["ast_links"][returned][0]
    assert source[encoding["offset_mapping"][statement_head][0]:].startswith("d"), tokens  # the "def" line
    sibling = encoding["ast_links"][returned][1]
    assert text_of[sibling] == "y"


def test_default_relations_reach_far_through_bpe(tokenizer):
    assert tokenizer.ast_relations == list(DEFAULT_RELATIONS)
    source = ("def helper(value):\n    return value * 2\n\n\ndef total_of(values):\n    total = 0\n"
              "    for value in values:\n        total += helper(value)\n    return total\n")
    encoding = tokenizer(source, language="python", return_offsets_mapping=True)
    offsets, links = encoding["offset_mapping"], encoding["ast_links"]

    def token_at(text: str) -> int:  # the (non-empty) token starting the first occurrence of text
        return offsets.index(next(span for span in offsets if span[0] == source.index(text) and span[1] > span[0]))

    def linked(text: str, relation: str) -> int:
        return links[token_at(text)][DEFAULT_RELATIONS.index(relation)]

    assert linked("total\n", "declaration") == token_at("total = 0")  # "return total" → where total is introduced
    assert linked("total +=", "declaration") == token_at("total = 0")
    assert linked("value)\n", "declaration") == token_at("value in")  # total_of's loop variable, not helper's
    assert linked("helper(value)\n", "call") == token_at("helper")  # the callee → the defined name
    assert linked("return total", "exit") == token_at("def total_of")
    assert linked("value * 2", "declaration") == token_at("value")  # helper's own parameter


def test_language_none_and_default_language(bpe_dir):
    plain = SasaTokenizer.from_pretrained(bpe_dir)
    assert all(row == [-1] * WIDTH for row in plain(PYTHON)["ast_links"])
    python = SasaTokenizer.from_pretrained(bpe_dir, language="python")
    assert python(PYTHON)["ast_links"] == plain(PYTHON, language="python")["ast_links"]
    assert all(row == [-1] * WIDTH for row in python(PYTHON, language=None)["ast_links"])


def test_unknown_language_is_a_value_error(tokenizer):
    with pytest.raises(ValueError, match="supported: python, java"):
        tokenizer(PYTHON, language="fortran")


def test_batches_pad_and_convert_to_tensors(tokenizer):
    batch = tokenizer([PYTHON, "x = 1\n"], language="python", padding=True, return_tensors="pt")
    assert batch["ast_links"].shape == (*batch["input_ids"].shape, WIDTH)
    short = batch["attention_mask"][1].bool()
    assert (batch["ast_links"][1][~short] == -1).all()
    single = tokenizer(PYTHON, language="python", return_tensors="pt")
    assert single["ast_links"].shape == (1, single["input_ids"].shape[1], WIDTH)
    assert torch.equal(single["ast_links"][0], torch.tensor(tokenizer(PYTHON, language="python")["ast_links"]))


def test_truncation_cuts_the_structure_consistently(tokenizer):
    full = tokenizer(PYTHON, language="python")
    cut = tokenizer(PYTHON, language="python", truncation=True, max_length=20)
    assert len(cut["input_ids"]) == 20
    assert_consistent(cut)
    assert cut["ast_links"][:5] == full["ast_links"][:5]  # early tokens keep their links


@pytest.mark.parametrize("side", ["right", "left"])
def test_tokenizer_pad_and_data_collator_pad_ast_links(tokenizer, side):
    features = [tokenizer(PYTHON, language="python"), tokenizer("x = 1\n", language="python")]
    tokenizer.padding_side = side
    batch = DataCollatorWithPadding(tokenizer)(features)
    width = batch["input_ids"].shape[1]
    assert batch["ast_links"].shape == (2, width, WIDTH)
    short = features[1]
    shift = width - len(short["input_ids"]) if side == "left" else 0
    real = slice(shift, shift + len(short["input_ids"]))
    expected = torch.tensor([[t + shift if t >= 0 else -1 for t in row] for row in short["ast_links"]])
    assert torch.equal(batch["ast_links"][1, real], expected)
    assert torch.equal(batch["input_ids"][1, real], torch.tensor(short["input_ids"]))


def test_pairs_are_parsed_per_segment(tokenizer):
    encoding = tokenizer("a = 1\nb = a\n", "a = 2\nc = a\n", language="python")  # the same name in both
    sequence_ids = encoding.sequence_ids()
    for position, row in enumerate(encoding["ast_links"]):
        for target in row:
            if target >= 0:
                assert sequence_ids[target] == sequence_ids[position]
    assert any(t >= 0 for row, sid in zip(encoding["ast_links"], sequence_ids) if sid == 1 for t in row)


@pytest.mark.parametrize(
    "source",
    ["", "   \n\t  \n", "x" * 5000, "def f(:\n  return ((", "#" + "é" * 300 + "\n" + "y = 1\n"],
    ids=["empty", "whitespace", "huge-line", "broken", "non-ascii"],
)
def test_awkward_inputs_behave(tokenizer, source):
    encoding = tokenizer(source, language="python", truncation=True, max_length=64)
    assert_consistent(encoding)
    assert len(encoding["input_ids"]) <= 64


def test_non_utf8_bytes_are_decoded_with_replacement(tokenizer):
    raw = b"s = '\xff\xfe'\nreturn_value = s\n"
    encoding = tokenizer(raw, language="python")
    assert encoding["input_ids"] == tokenizer(raw.decode("utf-8", errors="replace"), language="python")["input_ids"]
    assert_consistent(encoding)


def test_inputs_far_longer_than_max_length(tokenizer):
    source = PYTHON * 200
    encoding = tokenizer(source, language="python", truncation=True, max_length=512)
    assert len(encoding["input_ids"]) == 512
    assert_consistent(encoding)


def test_pretokenized_input_needs_language_none(tokenizer):
    with pytest.raises(ValueError, match="language=None"):
        tokenizer(["def", "f"], is_split_into_words=True, language="python")


def test_save_and_reload_keeps_language_and_relations(tmp_path, bpe_dir):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir, language="java", ast_relations=("span", "statement"))
    tokenizer.save_pretrained(tmp_path)
    reloaded = SasaTokenizer.from_pretrained(tmp_path)
    assert reloaded.language == "java" and reloaded.ast_relations == ["span", "statement"]
    assert reloaded(JAVA)["ast_links"] == tokenizer(JAVA)["ast_links"]
    assert {"tokenization_sasa.py", "ast_relations.py", "ast_languages.py"} <= {p.name for p in tmp_path.iterdir()}


SOURCE_ALPHABET = st.sampled_from(list("abcxyz_019 \t\n(){}[];:,.=+-*/<>'\"#\\é漢😀") + ["def ", "return ", "if ", "class "])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.lists(SOURCE_ALPHABET, max_size=80).map("".join),
       language=st.sampled_from(["python", "java", "c", "javascript", None]),
       max_length=st.integers(min_value=4, max_value=96))
def test_property_tokenizer_never_crashes_and_shapes_agree(tokenizer, source, language, max_length):
    encoding = tokenizer(source, language=language, truncation=True, max_length=max_length)
    assert_consistent(encoding)
    assert len(encoding["input_ids"]) <= max_length
    batch = tokenizer([source, source[: len(source) // 2]], language=language, padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
    assert batch["ast_links"].shape == (*batch["input_ids"].shape, WIDTH)


def test_mixed_language_batch_equals_the_per_example_results(tokenizer):
    texts, languages = [PYTHON, JAVA, PYTHON], ["python", "java", None]
    batch = tokenizer(texts, language=languages)
    for row, (text, language) in enumerate(zip(texts, languages)):
        single = tokenizer(text, language=language)
        assert batch["input_ids"][row] == single["input_ids"]
        assert batch["ast_links"][row] == single["ast_links"]
    assert any(t >= 0 for row in batch["ast_links"][1] for t in row)  # java got links
    assert all(row == [-1] * WIDTH for row in batch["ast_links"][2])  # None: no links


def test_mixed_language_batch_pads_to_tensors_and_accepts_aliases_in_a_tuple(tokenizer):
    batch = tokenizer([JAVA, PYTHON], language=("JAVA", "py"), padding=True, return_tensors="pt")
    for row, (text, language) in enumerate([(JAVA, "java"), (PYTHON, "python")]):
        single = tokenizer(text, language=language, return_tensors="pt")["ast_links"][0]
        assert torch.equal(batch["ast_links"][row, : len(single)], single)
        assert (batch["ast_links"][row, len(single):] == -1).all()


def test_mixed_language_pairs_parse_each_example_in_its_language(tokenizer):
    batch = tokenizer([PYTHON, JAVA], [PYTHON, JAVA], language=["python", "java"])
    for row, (text, language) in enumerate([(PYTHON, "python"), (JAVA, "java")]):
        assert batch["ast_links"][row] == tokenizer(text, text, language=language)["ast_links"]


def test_overflowing_chunks_take_the_language_of_their_example(tokenizer):
    texts, languages = [PYTHON, JAVA, JAVA], ["python", "java", None]
    options = dict(truncation=True, max_length=32, stride=4, return_overflowing_tokens=True)
    batch = tokenizer(texts, language=languages, **options)
    mapping = batch["overflow_to_sample_mapping"]
    for sample, (text, language) in enumerate(zip(texts, languages)):
        chunks = [row for row, owner in zip(batch["ast_links"], mapping) if owner == sample]
        assert len(chunks) > 1  # the test needs real overflow
        assert chunks == tokenizer(text, language=language, **options)["ast_links"]


def test_language_list_length_must_match_the_batch(tokenizer):
    with pytest.raises(ValueError, match="language= has 2 entries but the batch has 3 examples"):
        tokenizer([PYTHON, JAVA, PYTHON], language=["python", "java"])


def test_language_list_for_a_single_text_is_a_value_error(tokenizer):
    with pytest.raises(ValueError, match="input is a single text"):
        tokenizer(PYTHON, language=["python"])


@pytest.mark.parametrize(
    ("language", "message"),
    [(123, r"language= must be a language name \(str\), None, or a list/tuple of them.*got 123 \(int\)"),
     ({"python"}, r"got \{'python'\} \(set\)"),
     ([1, 2], r"language\[0\]: a language must be a language name \(str\) or None, got 1 \(int\)"),
     (["python", "cobol"], r"language\[1\]: unsupported language 'cobol'")],
    ids=["int", "set", "list-of-int", "unknown-in-list"],
)
def test_wrong_language_type_is_a_value_error_saying_what_is_expected(tokenizer, language, message):
    texts = [PYTHON, JAVA] if isinstance(language, list) else PYTHON
    with pytest.raises(ValueError, match=message) as error:
        tokenizer(texts, language=language)
    assert "supported: python, java" in str(error.value)


def test_default_language_is_one_name_validated_on_init_and_assignment(tmp_path, bpe_dir, tokenizer):
    with pytest.raises(ValueError, match="default language is one language name or None"):
        SasaTokenizer.from_pretrained(bpe_dir, language=["python", "java"])
    with pytest.raises(ValueError, match="default language is one language name or None"):
        tokenizer.language = ["python"]
    tokenizer.language = "JS"
    assert tokenizer.language == "javascript"
    tokenizer.save_pretrained(tmp_path)
    assert SasaTokenizer.from_pretrained(tmp_path).language == "javascript"


def test_pretokenized_batches_take_language_none_or_a_list_of_none(tokenizer):
    words = [["def", "f"], ["x", "=", "1"]]
    for language in (None, [None, None]):
        encoding = tokenizer(words, is_split_into_words=True, language=language)
        assert [len(row) for row in encoding["ast_links"]] == [len(ids) for ids in encoding["input_ids"]]
    with pytest.raises(ValueError, match="language=None"):
        tokenizer(words, is_split_into_words=True, language=[None, "python"])
