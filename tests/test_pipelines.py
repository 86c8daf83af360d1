"""transformers pipelines with a SASA checkpoint: how AST links reach the model through each of them.

Each test saves a tiny checkpoint (model + tokenizer) to a directory, loads it with
``pipeline(task, model=directory, trust_remote_code=True)`` and checks the pipeline's output against the model run
directly on ``tokenizer(code, language=...)``: equal to the output with AST links, and different from the output
without them (the test input is long enough, and the weights large enough, for the links to change the layout and
the result).

What carries ``language=`` to the tokenizer differs per pipeline (transformers 5.x):

- ``feature-extraction``: ``tokenize_kwargs={"language": ...}``; a plain ``language=`` is silently ignored.
- ``fill-mask``: ``tokenizer_kwargs={"language": ...}``; a plain ``language=`` is a ``TypeError``.
- ``text-classification``: a plain ``language=...`` (extra keywords go to the tokenizer), or
  ``tokenizer_kwargs={"language": ...}`` (the tokenizer's own argument); ``tokenize_kwargs`` is silently ignored.
- every pipeline: the tokenizer's default language, saved with the checkpoint or set on ``pipe.tokenizer.language``.
"""

from collections.abc import Callable

import pytest
import torch
import transformers

from conftest import read_snippet, tiny_config
from sasa import SasaForMaskedLM, SasaForSequenceClassification, SasaModel, SasaTokenizer

JAVA = read_snippet("Example.java")
TEXTS = {
    "feature-extraction": JAVA,
    "fill-mask": JAVA.replace("result += value", "result <mask>= value"),
    "text-classification": JAVA,
}
HEADS = {
    "feature-extraction": SasaModel,
    "fill-mask": SasaForMaskedLM,
    "text-classification": SasaForSequenceClassification,
}
#: Per task, the call keywords that bring ``language`` to the tokenizer.
LANGUAGE_KEYWORDS: dict[str, Callable[[str | None], dict]] = {
    "feature-extraction": lambda language: {"tokenize_kwargs": {"language": language}},
    "fill-mask": lambda language: {"tokenizer_kwargs": {"language": language}},
    "text-classification": lambda language: {"language": language},
}
TASKS = list(HEADS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, bpe_dir) -> Callable:
    """``checkpoint(task, language=None)`` → (directory, model, tokenizer): a saved tiny checkpoint, built once.

    ``initializer_range=0.5`` makes attention peaked enough that a changed layout visibly changes the output.
    """
    built = {}

    def make(task: str, language: str | None = None):
        if (task, language) not in built:
            tokenizer = SasaTokenizer.from_pretrained(bpe_dir, language=language)
            torch.manual_seed(0)
            model = HEADS[task](tiny_config(vocab_size=len(tokenizer), initializer_range=0.5)).eval()
            directory = tmp_path_factory.mktemp(task)
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)  # saves the default language with the tokenizer
            built[task, language] = (str(directory), model, tokenizer)
        return built[task, language]

    return make


def load_pipeline(directory: str, task: str, **kwargs) -> transformers.Pipeline:
    return transformers.pipeline(task, model=directory, trust_remote_code=True, **kwargs)


def pipeline_scores(pipe: transformers.Pipeline, task: str, text: str, **kwargs) -> torch.Tensor:
    """The pipeline's output as one tensor: hidden states, mask-token probabilities over the vocabulary, or label
    probabilities in label-id order."""
    if task == "feature-extraction":
        return pipe(text, return_tensors=True, **kwargs)[0]
    if task == "fill-mask":
        scores = torch.zeros(len(pipe.tokenizer))
        for prediction in pipe(text, top_k=len(pipe.tokenizer), **kwargs):
            scores[prediction["token"]] = prediction["score"]
        return scores
    by_label = {row["label"]: row["score"] for row in pipe(text, top_k=None, **kwargs)}
    return torch.tensor([by_label[pipe.model.config.id2label[i]] for i in range(len(by_label))])


def model_scores(model, tokenizer: SasaTokenizer, task: str, text: str, language: str | None) -> torch.Tensor:
    """What :func:`pipeline_scores` should give, computed with the model on ``tokenizer(text, language=language)``."""
    inputs = tokenizer(text, language=language, return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    if task == "feature-extraction":
        return output.last_hidden_state[0]
    if task == "fill-mask":
        masked = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero().item()
        return output.logits[0, masked].softmax(-1)
    return output.logits[0].softmax(-1)


def expected_scores(model, tokenizer: SasaTokenizer, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output on the task's Java text with AST links and without, checked to differ."""
    text = TEXTS[task]
    linked, plain = (tokenizer(text, language=language, return_tensors="pt") for language in ("java", None))
    base = model.base_model
    with_links = base.layout(linked["input_ids"], linked["attention_mask"], linked["ast_links"]).block_mask
    without = base.layout(plain["input_ids"], plain["attention_mask"], plain["ast_links"]).block_mask
    assert not torch.equal(with_links, without), "the AST links do not change the layout: the test proves nothing"
    scores = model_scores(model, tokenizer, task, text, "java"), model_scores(model, tokenizer, task, text, None)
    assert not torch.allclose(*scores, atol=1e-4), "the layout change does not show in the output"
    return scores


@pytest.mark.parametrize("task", TASKS)
def test_the_per_call_language_argument_brings_ast_links_to_the_model(checkpoint, task):
    directory, model, tokenizer = checkpoint(task)
    with_links, without_links = expected_scores(model, tokenizer, task)
    pipe = load_pipeline(directory, task)
    torch.testing.assert_close(pipeline_scores(pipe, task, TEXTS[task], **LANGUAGE_KEYWORDS[task]("java")), with_links)
    torch.testing.assert_close(pipeline_scores(pipe, task, TEXTS[task]), without_links)  # no default language


@pytest.mark.parametrize("task", TASKS)
def test_the_saved_default_language_brings_ast_links_to_the_model(checkpoint, task):
    directory, model, tokenizer = checkpoint(task, language="java")
    with_links, without_links = expected_scores(model, tokenizer, task)
    pipe = load_pipeline(directory, task)
    assert pipe.tokenizer.language == "java"
    torch.testing.assert_close(pipeline_scores(pipe, task, TEXTS[task]), with_links)
    overridden = pipeline_scores(pipe, task, TEXTS[task], **LANGUAGE_KEYWORDS[task](None))
    torch.testing.assert_close(overridden, without_links)


def test_text_classification_also_takes_the_language_in_tokenizer_kwargs(checkpoint):
    directory, model, tokenizer = checkpoint("text-classification")
    with_links, _ = expected_scores(model, tokenizer, "text-classification")
    pipe = load_pipeline(directory, "text-classification")
    scores = pipeline_scores(pipe, "text-classification", JAVA, tokenizer_kwargs={"language": "java"})
    torch.testing.assert_close(scores, with_links)


def test_a_language_given_when_the_pipeline_is_built_applies_to_every_call(checkpoint):
    directory, model, tokenizer = checkpoint("feature-extraction")
    with_links, _ = expected_scores(model, tokenizer, "feature-extraction")
    built_with = load_pipeline(directory, "feature-extraction", tokenize_kwargs={"language": "java"})
    torch.testing.assert_close(pipeline_scores(built_with, "feature-extraction", JAVA), with_links)
    assigned = load_pipeline(directory, "feature-extraction")
    assigned.tokenizer.language = "java"
    torch.testing.assert_close(pipeline_scores(assigned, "feature-extraction", JAVA), with_links)


def test_a_batched_pipeline_matches_one_input_at_a_time(checkpoint):
    """The pipeline's collator pads ``ast_links`` with 0 (not -1): padded rows link to ``<s>`` in the global block,
    which every block attends to already, so the layout and the outputs do not change."""
    directory, _, _ = checkpoint("feature-extraction")
    pipe = load_pipeline(directory, "feature-extraction", tokenize_kwargs={"language": "java"})
    texts = [JAVA, JAVA[: len(JAVA) // 3]]
    batched = pipe(texts, batch_size=2, return_tensors=True)
    for text, together in zip(texts, batched):
        alone = pipe(text, return_tensors=True)
        torch.testing.assert_close(together[:, : alone.shape[1]], alone)


def test_wrongly_named_language_arguments_are_ignored_or_refused(checkpoint):
    """The pitfalls the README warns about: these calls do *not* bring AST links to the model."""
    for task, wrong in (("feature-extraction", {"language": "java"}),
                        ("feature-extraction", {"tokenizer_kwargs": {"language": "java"}}),
                        ("text-classification", {"tokenize_kwargs": {"language": "java"}})):
        directory, model, tokenizer = checkpoint(task)
        _, without_links = expected_scores(model, tokenizer, task)
        pipe = load_pipeline(directory, task)
        torch.testing.assert_close(pipeline_scores(pipe, task, TEXTS[task], **wrong), without_links)
    directory, _, _ = checkpoint("fill-mask")
    with pytest.raises(TypeError, match="language"):
        load_pipeline(directory, "fill-mask")(TEXTS["fill-mask"], language="java")
