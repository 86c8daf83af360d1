"""sentence-transformers' ``Transformer`` module for a SASA code-search checkpoint: code with AST links, queries without.

Shipped inside code-search checkpoints (``sasa.sentence_transformers_files`` copies it next to the ``modules.json``
that names it), so ``SentenceTransformer(path, trust_remote_code=True)`` loads it where the ``sasa`` package is not
installed. It imports sentence-transformers (6.x: installed wherever this file is loaded) and nothing of ``sasa``.

The bi-encoder was trained on code tokenized with the AST links of its language and on queries without any
(``language=None``). sentence-transformers' ``encode_query``/``encode_document`` pass ``task="query"``/``"document"``
to the first module's ``preprocess``; this module turns the task into the tokenizer's ``language=``:

* ``encode_query(queries)`` (``task="query"``): ``language=None``, always;
* ``encode_document(code)`` and ``encode(code)``: the call's ``language=`` (one name, or ``None`` for no links, e.g.
  ``model.encode_document(code, language="java")``), else the tokenizer's default language, saved with it.

Everything else is sentence-transformers' own ``Transformer``: the encoder is the checkpoint's ``AutoModel`` (the plain
SASA encoder), and the ``Pooling`` module after it pools as ``config.pooling`` (``mean`` or ``cls``), which gives the
vectors of ``SasaForCodeSearch.encode()``.
"""

from __future__ import annotations

from typing import Any

from sentence_transformers.base.modules import Transformer

_UNSET = object()


class SasaTransformer(Transformer):
    """``Transformer`` whose tokenizer call gets ``language=`` from the task: ``None`` for queries, the call's or the
    tokenizer's default language for code (see the module docstring)."""

    #: ``encode*(..., language=...)`` is accepted (sentence-transformers checks keywords against these) and reaches
    #: :meth:`preprocess`; :meth:`forward` drops it before the model.
    forward_kwargs = {"language"}

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs: dict | None = None,
                   language: Any = _UNSET, **kwargs) -> dict[str, Any]:
        """Tokenize ``inputs`` as ``Transformer.preprocess`` does, with ``language=None`` for ``task="query"`` and the
        call's ``language`` (if given) otherwise. ``processing_kwargs={"text": {"language": ...}}`` still wins."""
        if isinstance(language, (list, tuple)):
            raise ValueError(f"language={list(language)!r}: sentence-transformers reorders the inputs by length, so a "
                             "per-input list would reach the wrong texts; encode one language at a time "
                             "(language='java'), or None for no AST links.")
        if kwargs.get("task") == "query":
            language = None  # queries were trained without AST links
        text_kwargs = {} if language is _UNSET else {"language": language}
        processing_kwargs = dict(processing_kwargs or {})
        processing_kwargs["text"] = {**text_kwargs, **processing_kwargs.get("text", {})}
        return super().preprocess(inputs, prompt=prompt, processing_kwargs=processing_kwargs, **kwargs)

    def forward(self, features: dict[str, Any], language: Any = None, **kwargs) -> dict[str, Any]:
        """``Transformer.forward``; ``language`` was the tokenizer's business (:meth:`preprocess`)."""
        return super().forward(features, **kwargs)
