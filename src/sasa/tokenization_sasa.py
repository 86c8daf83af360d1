"""SasaTokenizer: RoBERTa's byte-level BPE plus the AST links SASA's layout needs.

``tokenizer(code, language="java")`` returns ``input_ids``, ``attention_mask`` and ``ast_links`` (``[L, R]`` per
example: for each token, the index of the token each of the ``R`` AST relations links it to, ``-1`` for none; see
:mod:`ast_relations`). It reads RoBERTa/CodeBERT vocabulary files unchanged. ``ast_links`` is a plain batch-first
field: it pads (with ``-1`` rows) through ``tokenizer.pad``, ``DataCollatorWithPadding``, Trainer and Accelerate, and
truncation cuts it with the tokens (links always point at kept tokens).

This file is shipped with checkpoints (``save_pretrained`` copies it, ``ast_relations.py`` and ``ast_languages.py``); tree-sitter is
imported only when code is parsed, so a checkpoint's tokenizer loads without it and works with ``language=None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
from transformers import RobertaTokenizer

from .ast_languages import normalize_language, supported_languages_text
from .ast_relations import DEFAULT_RELATIONS, token_links, validate_relations

_DEFAULT = object()
#: What ``language=`` accepts in a call: one name (or ``None``) for every example, or one per example of a batch.
LanguageArgument = str | None | Sequence[str | None]


def _decode_bytes(text):
    """Source given as ``bytes`` is decoded as UTF-8, invalid bytes replaced by U+FFFD (recursively in lists)."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    if isinstance(text, (list, tuple)):
        return type(text)(_decode_bytes(item) for item in text)
    return text


def _is_batched(text, is_split_into_words: bool) -> bool:
    """Whether ``text`` is a batch, by the rule transformers' tokenizers use (pre-tokenized: a list of lists)."""
    if is_split_into_words:
        return isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
    return isinstance(text, (list, tuple))


def _default_language(language: str | None) -> str | None:
    """The canonical default language of a tokenizer: one name or ``None``, never a per-example list."""
    if isinstance(language, (list, tuple)):
        raise ValueError(f"a SasaTokenizer's default language is one language name or None, got {language!r}; "
                         "give a list per call instead (tokenizer(texts, language=[...]), one per example).")
    return normalize_language(language)


def _languages_per_example(language: LanguageArgument, count: int, batched: bool) -> list[str | None]:
    """One canonical language (or ``None``) for each of the ``count`` examples of a call.

    ``language`` is one name or ``None`` (used for every example), or a list/tuple with one entry per example of a
    batch. ``ValueError`` for a list given with a single (unbatched) text, a list whose length is not ``count``, or
    anything that is not a name, ``None`` or a list of them.
    """
    if not isinstance(language, (list, tuple)):
        if language is not None and not isinstance(language, str):
            raise ValueError(f"language= must be a language name (str), None, or a list/tuple of them with one "
                             f"entry per example of a batch; got {language!r} ({type(language).__name__}); "
                             f"{supported_languages_text()}.")
        return [normalize_language(language)] * count
    if not batched:
        raise ValueError(f"language={list(language)!r} is a list (one language per example of a batch), but the "
                         "input is a single text: pass one language name or None.")
    if len(language) != count:
        raise ValueError(f"language= has {len(language)} entries but the batch has {count} examples: give one "
                         "language (or None) per example.")
    return [_entry_language(entry, index) for index, entry in enumerate(language)]


def _entry_language(entry, index: int) -> str | None:
    """``normalize_language`` for entry ``index`` of a per-example list, naming the entry in its error."""
    try:
        return normalize_language(entry)
    except ValueError as error:
        raise ValueError(f"language[{index}]: {error}") from None


class SasaTokenizer(RobertaTokenizer):
    r"""Byte-level BPE tokenizer (RoBERTa/CodeBERT vocabulary) that also returns AST links.

    Args:
        language: Default language of the code (``"python"``, ``"java"``, ``"c"``, ``"cpp"``, ``"go"``,
            ``"javascript"``, ``"ruby"``, ``"php"``), overridable per call with ``language=...``. ``None``: no AST
            links (``ast_links`` is all ``-1``; the model then uses window + global + top-k blocks).
        ast_relations: The relations to emit, one column each, from :data:`ast_relations.RELATIONS` (default:
            :data:`ast_relations.DEFAULT_RELATIONS`).
        Other arguments: as ``RobertaTokenizer`` (``vocab``, ``merges``, special tokens, ...).

    Call-time extras: ``language=`` (one name or ``None`` for the whole call, or for a batch a list with one entry
    per example, e.g. ``language=["python", "java", None]``); ``bytes`` input (decoded as UTF-8 with invalid bytes
    replaced by U+FFFD). Pre-tokenized input (``is_split_into_words=True``) has no source to parse and needs
    ``language=None``.
    """

    model_input_names = ["input_ids", "attention_mask", "ast_links"]

    def __init__(self, *args, language: str | None = None, ast_relations=DEFAULT_RELATIONS, **kwargs):
        self.language = language
        self.ast_relations = list(validate_relations(ast_relations))
        super().__init__(*args, language=self.language, ast_relations=self.ast_relations, **kwargs)

    @property
    def language(self) -> str | None:
        """The default language (canonical name, or ``None``); assigning validates it, and ``save_pretrained`` saves it."""
        return self._language

    @language.setter
    def language(self, language: str | None) -> None:
        self._language = _default_language(language)

    def _encode_plus(self, text, text_pair=None, *args, language: LanguageArgument = _DEFAULT,
                     return_offsets_mapping: bool = False, return_tensors=None, is_split_into_words: bool = False,
                     **kwargs):
        batched = _is_batched(text, is_split_into_words)
        count = len(text) if batched else 1
        languages = _languages_per_example(self.language if language is _DEFAULT else language, count, batched)
        if is_split_into_words and any(name is not None for name in languages):
            raise ValueError("pre-tokenized input (is_split_into_words=True) has no source to parse: pass language=None.")
        text, text_pair = _decode_bytes(text), _decode_bytes(text_pair)
        encoding = super()._encode_plus(text, text_pair, *args, return_offsets_mapping=True, return_tensors=None,
                                        is_split_into_words=is_split_into_words, **kwargs)

        texts = list(text) if batched else [text]
        pairs = list(text_pair) if batched and text_pair is not None else [text_pair] * len(texts)
        sample_of = encoding.get("overflow_to_sample_mapping") or range(len(encoding.encodings))
        unbatched = not isinstance(encoding["input_ids"][0], list) if encoding["input_ids"] else False
        offsets = [encoding["offset_mapping"]] if unbatched else encoding["offset_mapping"]
        links = [
            self._links(tokens, spans, texts[sample], pairs[sample], languages[sample])
            for tokens, spans, sample in zip(encoding.encodings, offsets, sample_of)
        ]
        encoding["ast_links"] = links[0] if unbatched else links
        if not return_offsets_mapping:
            del encoding["offset_mapping"]
        if return_tensors is not None:
            encoding.convert_to_tensors(return_tensors, prepend_batch_axis=unbatched)
        return encoding

    def _links(self, tokens, offsets, source, pair, language) -> list[list[int]]:
        """``[L][R]`` links of one encoded sequence (``offsets``: its offset mapping), each segment parsed on its own."""
        links = np.full((len(offsets), len(self.ast_relations)), -1, dtype=np.int64)
        if language is not None and offsets:
            relations = tuple(self.ast_relations)
            offsets = np.fromiter(chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets)).reshape(-1, 2)
            if pair is None:  # special tokens have empty spans: they get no links and nothing links to them
                if isinstance(source, str):
                    links = token_links(source, offsets, language, relations)
            else:
                sequence_ids = np.array(tokens.sequence_ids, dtype=np.float64)  # None (special tokens) → NaN
                for segment, segment_source in ((0, source), (1, pair)):
                    positions = np.flatnonzero(sequence_ids == segment)
                    if positions.size and isinstance(segment_source, str):
                        local = token_links(segment_source, offsets[positions], language, relations)
                        links[positions] = np.where(local >= 0, positions[np.maximum(local, 0)], -1)
        return links.tolist()

    def _pad(self, encoded_inputs, max_length=None, padding_strategy=None, pad_to_multiple_of=None,
             padding_side=None, return_attention_mask=None):
        """Pad ``ast_links`` with ``-1`` rows like ``input_ids``; left padding shifts the token indices."""
        links = encoded_inputs.get("ast_links")
        length = len(encoded_inputs[self.model_input_names[0]])
        kwargs = dict(max_length=max_length, pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                      return_attention_mask=return_attention_mask)
        if padding_strategy is not None:
            kwargs["padding_strategy"] = padding_strategy
        padded = super()._pad(encoded_inputs, **kwargs)
        difference = len(padded[self.model_input_names[0]]) - length
        if links is not None and difference > 0:
            filler = [[-1] * len(self.ast_relations) for _ in range(difference)]
            links = [list(row) for row in links]
            if (padding_side or self.padding_side) == "right":
                padded["ast_links"] = links + filler
            else:
                padded["ast_links"] = filler + [[i + difference if i >= 0 else -1 for i in row] for row in links]
        return padded


SasaTokenizer.register_for_auto_class()
