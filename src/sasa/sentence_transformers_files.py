"""The files that make a saved code-search checkpoint a sentence-transformers model, loaded without guessing.

:func:`save_sentence_transformers_files` writes them next to a saved :class:`~sasa.SasaForCodeSearch` and its
tokenizer (``sasa demo`` and ``examples/run_code_search.py`` call it after saving). Then, with sentence-transformers
6 installed, where ``sasa`` need not be::

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, trust_remote_code=True)
    code_vectors = model.encode_document(functions)               # AST links in the tokenizer's default language
    java_vectors = model.encode_document(java_functions, language="java")
    query_vectors = model.encode_query(["read a config file"])    # no AST links, as in training
    scores = model.similarity(query_vectors, code_vectors)        # dot product, as the model was trained

The vectors are those of ``SasaForCodeSearch.encode()`` (``config.pooling``: mean or ``<s>``). Writing these files
needs no sentence-transformers: they are plain JSON, in its 6.x format, plus the module file it loads as remote code.
"""

from __future__ import annotations

import json
import os
import shutil

#: The sentence-transformers module shipped with the checkpoint (remote code), and how ``modules.json`` names it.
MODULE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sentence_transformers_module.py")
MODULE_TYPE = "sentence_transformers_module.SasaTransformer"
POOLING_TYPE = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
POOLING_DIR = "1_Pooling"


def save_sentence_transformers_files(model, output_dir: str, max_query_length: int | None = None) -> list[str]:
    """Write sentence-transformers' files into ``output_dir``, where ``model`` (a :class:`~sasa.SasaForCodeSearch`)
    and its tokenizer are saved; returns the paths written.

    * ``modules.json``: the input module :class:`~sentence_transformers_module.SasaTransformer` (sentence-transformers'
      ``Transformer`` that tokenizes queries without AST links and code with them), then ``Pooling``;
    * ``sentence_bert_config.json``: that module's settings: the plain encoder's last hidden states, inputs cut at the
      model's positions (``config.max_sequence_length``), queries at ``max_query_length`` tokens when given (the
      training's query length);
    * ``1_Pooling/config.json``: ``config.pooling`` (``mean`` or ``cls``) over ``config.hidden_size``;
    * ``config_sentence_transformers.json``: dot-product similarity (the training's scores), empty ``query`` and
      ``document`` prompts, sentence-transformers >= 6 required;
    * ``sentence_transformers_module.py``: the module's code.

    ``ValueError`` if ``output_dir`` does not hold a saved checkpoint with its tokenizer, or if the model does not pool
    as a code-search model does.
    """
    config = model.config
    pooling = getattr(config, "pooling", None)
    if not callable(getattr(model, "encode", None)) or pooling not in ("mean", "cls"):
        raise ValueError(f"expected a SasaForCodeSearch model (encode(), config.pooling 'mean' or 'cls'), got "
                         f"{type(model).__name__} with pooling {pooling!r}.")
    missing = [name for name in ("config.json", "tokenizer_config.json")
               if not os.path.isfile(os.path.join(output_dir, name))]
    if missing:
        raise ValueError(f"{output_dir} lacks {missing}: save the model and its tokenizer there first "
                         "(model.save_pretrained(output_dir), tokenizer.save_pretrained(output_dir)).")
    transformer = {"transformer_task": "feature-extraction",
                   "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                   "module_output_name": "token_embeddings", "max_seq_length": config.max_sequence_length}
    if max_query_length is not None:
        transformer["query_length"] = min(max_query_length, config.max_sequence_length)
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE},
            {"idx": 1, "name": "1", "path": POOLING_DIR, "type": POOLING_TYPE},
        ],
        "sentence_bert_config.json": transformer,
        os.path.join(POOLING_DIR, "config.json"): {
            "embedding_dimension": config.hidden_size, "pooling_mode": pooling, "include_prompt": True},
        "config_sentence_transformers.json": {
            "model_type": "SentenceTransformer", "prompts": {"query": "", "document": ""},
            "default_prompt_name": None, "similarity_fn_name": "dot",
            "requirements": {"sentence_transformers": {
                "specifier": ">=6.0", "reason": "the SASA module subclasses sentence-transformers 6's Transformer"}}},
    }
    written = []
    for name, content in files.items():
        path = os.path.join(output_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")
        written.append(path)
    written.append(shutil.copy(MODULE_FILE, os.path.join(output_dir, os.path.basename(MODULE_FILE))))
    return written
