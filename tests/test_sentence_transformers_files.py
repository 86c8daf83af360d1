"""sasa.sentence_transformers_files: a saved code-search checkpoint loads natively in sentence-transformers 6 (offline,
with and without the sasa package) and gives SasaForCodeSearch.encode()'s vectors, for code and for queries."""

import json
import logging
import textwrap

import pytest
import torch

from conftest import WITHOUT_SASA, Recorder, read_snippet, run_fresh_process, tiny_config
from sasa import SasaForCodeSearch, SasaModel, SasaTokenizer
from sasa.sentence_transformers_files import save_sentence_transformers_files

sentence_transformers = pytest.importorskip("sentence_transformers", minversion="6.0")

CODE = [read_snippet("example.py"), "def add_one(x):\n    return x + 1\n", "class A:\n    pass\n"]
JAVA = [read_snippet("Example.java")]
# Queries are natural language; the first parses as Python with AST links, so it tells language=None from "python".
QUERIES = ["total = add(total, value)\nprint(total)", "Return the sum of the values.", "add one to a number"]
MAX_QUERY_LENGTH = 12


def save_checkpoint(directory, tokenizer, pooling: str) -> SasaForCodeSearch:
    """A tiny code-search checkpoint, its tokenizer (default language Python) and sentence-transformers' files."""
    torch.manual_seed(0)
    model = SasaForCodeSearch(tiny_config(vocab_size=len(tokenizer), pooling=pooling)).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    save_sentence_transformers_files(model, str(directory), max_query_length=MAX_QUERY_LENGTH)
    return model


def expected_vectors(model, tokenizer) -> dict[str, torch.Tensor]:
    """encode()'s vectors: code in the tokenizer's default language, Java with its own, queries without links
    (and cut at the training's query length)."""
    with torch.no_grad():
        return {"code": model.encode(**tokenizer(CODE, padding=True, truncation=True, return_tensors="pt")),
                "java": model.encode(**tokenizer(JAVA, language="java", truncation=True, return_tensors="pt")),
                "queries": model.encode(**tokenizer(QUERIES, language=None, padding=True, truncation=True,
                                                    max_length=MAX_QUERY_LENGTH, return_tensors="pt")),
                "code_without_links": model.encode(**tokenizer(CODE, language=None, padding=True, truncation=True,
                                                               return_tensors="pt"))}


@pytest.fixture
def python_tokenizer(bpe_dir) -> SasaTokenizer:
    return SasaTokenizer.from_pretrained(bpe_dir, language="python")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_sentence_transformer_loads_the_checkpoint_and_gives_encodes_vectors(tmp_path, python_tokenizer, pooling):
    model = save_checkpoint(tmp_path, python_tokenizer, pooling)
    expected = expected_vectors(model, python_tokenizer)
    recorder = Recorder()
    loggers = [logging.getLogger("transformers"), logging.getLogger("sentence_transformers")]
    for logger in loggers:
        logger.addHandler(recorder)
    try:
        encoder = sentence_transformers.SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    finally:
        for logger in loggers:
            logger.removeHandler(recorder)
    assert not [m for m in recorder.messages if "LOAD REPORT" in m or "MISSING" in m or "mean pooling" in m]
    assert type(encoder[0]).__name__ == "SasaTransformer" and encoder[1].pooling_mode == pooling
    assert encoder.similarity_fn_name == "dot"  # the training's scores

    def close(actual, wanted):
        torch.testing.assert_close(actual, wanted, atol=1e-5, rtol=1e-5)

    close(encoder.encode_document(CODE, convert_to_tensor=True), expected["code"])
    close(encoder.encode(CODE, convert_to_tensor=True), expected["code"])  # no task: code
    close(encoder.encode_document(JAVA, language="java", convert_to_tensor=True), expected["java"])
    queries = encoder.encode_query(QUERIES, convert_to_tensor=True)
    close(queries, expected["queries"])
    # the task decides the links: none for queries (even one that parses as Python), the code's for documents
    assert (encoder.preprocess(QUERIES, task="query")["ast_links"] == -1).all()
    assert (encoder.preprocess(QUERIES, task="document")["ast_links"] >= 0).any()
    if pooling == "mean":  # <s> attends to every block anyway: links change its state too little to assert on
        assert (expected["code"] - expected["code_without_links"]).abs().max() > 1e-4  # links change the vectors
    close(encoder.similarity(queries, encoder.encode_document(CODE, convert_to_tensor=True)),
          expected["queries"] @ expected["code"].T)


def test_a_language_list_is_refused_since_inputs_are_reordered(tmp_path, python_tokenizer):
    save_checkpoint(tmp_path, python_tokenizer, "mean")
    encoder = sentence_transformers.SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    with pytest.raises(ValueError, match="reorders the inputs by length"):
        encoder.encode_document(CODE[:2], language=["python", "python"])


def test_the_files_are_sentence_transformers_own_format(tmp_path, python_tokenizer):
    model = save_checkpoint(tmp_path, python_tokenizer, "cls")
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers_module.SasaTransformer",
                                            "sentence_transformers.sentence_transformer.modules.pooling.Pooling"]
    assert json.loads((tmp_path / "1_Pooling" / "config.json").read_text()) == {
        "embedding_dimension": 32, "pooling_mode": "cls", "include_prompt": True}
    settings = json.loads((tmp_path / "sentence_bert_config.json").read_text())
    assert settings["max_seq_length"] == model.config.max_sequence_length
    assert settings["query_length"] == MAX_QUERY_LENGTH
    assert (tmp_path / "sentence_transformers_module.py").is_file()
    assert not json.loads((tmp_path / "config.json").read_text())["add_pooling_layer"]  # AutoModel: no pooler


def test_saving_the_files_says_what_is_missing(tmp_path, python_tokenizer):
    model = SasaForCodeSearch(tiny_config(vocab_size=len(python_tokenizer)))
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"lacks \['tokenizer_config.json'\]: save the model and its tokenizer"):
        save_sentence_transformers_files(model, str(tmp_path))
    with pytest.raises(ValueError, match="expected a SasaForCodeSearch model"):
        save_sentence_transformers_files(SasaModel(tiny_config()), str(tmp_path))


FRESH_PROCESS = WITHOUT_SASA + textwrap.dedent(
    """
    import json, sys

    import torch
    from sentence_transformers import SentenceTransformer

    case = json.loads(sys.argv[1])
    expected = torch.load(case["expected"])
    encoder = SentenceTransformer(case["path"], trust_remote_code=True, device="cpu")
    for module in (encoder[0], encoder[0].auto_model, encoder.tokenizer):
        assert type(module).__module__.startswith("transformers_modules"), type(module).__module__
    vectors = {"code": encoder.encode_document(case["code"], convert_to_tensor=True),
               "java": encoder.encode_document(case["java"], language="java", convert_to_tensor=True),
               "queries": encoder.encode_query(case["queries"], convert_to_tensor=True)}
    for name, tensor in vectors.items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-5, rtol=1e-5)
    print("identical")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_fresh_process_without_sasa_loads_it_offline_to_the_same_vectors(tmp_path, python_tokenizer, pooling):
    model = save_checkpoint(tmp_path / "checkpoint", python_tokenizer, pooling)
    torch.save(expected_vectors(model, python_tokenizer), tmp_path / "expected.pt")
    case = dict(path=str(tmp_path / "checkpoint"), expected=str(tmp_path / "expected.pt"), code=CODE, java=JAVA,
                queries=QUERIES)
    result = run_fresh_process(FRESH_PROCESS, json.dumps(case), cwd=tmp_path)
    assert "identical" in result.stdout
    assert "LOAD REPORT" not in result.stderr and "MISSING" not in result.stderr, result.stderr[-3000:]
    assert "No sentence-transformers model found" not in result.stderr
