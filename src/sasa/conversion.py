"""Turn a RoBERTa-family checkpoint (CodeBERT, GraphCodeBERT, UniXcoder, RoBERTa) into a SASA checkpoint.

The encoder weights carry over unchanged (SASA uses RoBERTa's parameter names); the learned position table is
extended to the new length by copying the trained rows along it, as Longformer did, keeping RoBERTa's
``padding_idx + 1`` offset (the original SASA release lost it).
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)

from .configuration_sasa import SasaConfig
from .frequency import install_identifier_tokens
from .modeling_sasa import SasaForMaskedLM, SasaForSequenceClassification, SasaModel
from .tokenization_sasa import SasaTokenizer

logger = logging.getLogger(__name__)

ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")
HEADS = {
    "base": (AutoModel, SasaModel),
    "masked-lm": (AutoModelForMaskedLM, SasaForMaskedLM),
    "sequence-classification": (AutoModelForSequenceClassification, SasaForSequenceClassification),
}
ENCODER_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "type_vocab_size", "initializer_range", "layer_norm_eps",
    "pad_token_id", "bos_token_id", "eos_token_id", "classifier_dropout", "id2label", "label2id",
)


def extend_position_embeddings(table: torch.Tensor, new_size: int, offset: int) -> torch.Tensor:
    """Copy a learned ``[old_size, hidden]`` position table along ``new_size`` rows.

    Rows ``[0, offset)`` (RoBERTa's reserved rows below ``padding_idx + 1``) are kept; the trained rows
    ``table[offset:]`` are repeated over ``[offset, new_size)``, so position ``offset + i`` gets the embedding of
    ``offset + i % (old_size - offset)``.
    """
    old_size, _ = table.shape
    if not offset < old_size:
        raise ValueError(f"position table of {old_size} rows has no trained rows after offset {offset}.")
    if new_size <= offset:
        raise ValueError(f"new_size {new_size} must exceed the offset {offset}.")
    trained = table[offset:]
    repeats = -(-(new_size - offset) // trained.shape[0])
    return torch.cat([table[:offset], trained.repeat(repeats, 1)[: new_size - offset]]).clone()


def sasa_config_from(source_config, max_position_embeddings: int | None = None, **sparse_fields) -> SasaConfig:
    """A :class:`SasaConfig` with the source encoder's fields, the new position length (default: the config's) and the
    given sparse fields."""
    model_type = getattr(source_config, "model_type", None)
    if model_type not in ROBERTA_FAMILY:
        raise ValueError(f"expected a RoBERTa-family checkpoint (model_type in {ROBERTA_FAMILY}), got {model_type!r}.")
    position_type = getattr(source_config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"only absolute position embeddings convert, got position_embedding_type={position_type!r}.")
    fields = {name: getattr(source_config, name) for name in ENCODER_FIELDS if hasattr(source_config, name)}
    fields["tie_word_embeddings"] = getattr(source_config, "tie_word_embeddings", True)
    if max_position_embeddings is not None:
        fields["max_position_embeddings"] = max_position_embeddings
    return SasaConfig(**fields, **sparse_fields)


def convert_roberta_model(
    source_model: PreTrainedModel, max_position_embeddings: int | None = None, head: str = "base", tokenizer=None,
    **sparse_fields
) -> PreTrainedModel:
    """Build the SASA model (``head`` in :data:`HEADS`) holding ``source_model``'s weights with longer positions
    (``max_position_embeddings``, default: SasaConfig's). With the source's ``tokenizer``, the input top-k source
    matches its identifier-like tokens (:func:`~sasa.frequency.install_identifier_tokens`)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}.")
    config = sasa_config_from(source_model.config, max_position_embeddings, **sparse_fields)
    target = HEADS[head][1](config)
    if head == "base":
        source_model = source_model.base_model
    source_prefix = source_model.base_model_prefix + "."
    state = {}
    for name, tensor in source_model.state_dict().items():
        if name.startswith(source_prefix) and head != "base":
            name = target.base_model_prefix + "." + name[len(source_prefix):]
        if name.endswith("position_embeddings.weight"):
            tensor = extend_position_embeddings(tensor, config.max_position_embeddings, config.pad_token_id + 1)
        state[name] = tensor
    missing, unexpected = target.load_state_dict(state, strict=False)
    # RoBERTa's non-persistent index buffers may appear; SASA's frequency table and (for MLM sources) pooler are new.
    unexpected = [k for k in unexpected if not k.endswith(("position_ids", "token_type_ids"))]
    missing = [k for k in missing if "frequency_table." not in k and not k.startswith("pooler.")]
    if unexpected or missing:
        raise ValueError(f"weights do not line up: missing {missing}, unexpected {unexpected}.")
    target.tie_weights()
    if tokenizer is not None:
        install_identifier_tokens(target, tokenizer)
    return target


def convert_roberta_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_position_embeddings: int | None = None,
    head: str = "auto",
    **sparse_fields,
) -> PreTrainedModel:
    """Convert a RoBERTa-family checkpoint (local directory, or Hub id when online) and save it to ``output_dir``.

    Args:
        source: The RoBERTa/CodeBERT checkpoint.
        output_dir: Where the SASA checkpoint (weights, config, code, and a :class:`SasaTokenizer` over the source's
            vocabulary when the source has one) is written.
        max_position_embeddings: New position table size (default: SasaConfig's, 2050 → 2048 usable tokens).
        head: ``"base"``, ``"masked-lm"``, ``"sequence-classification"``, or ``"auto"`` (masked-lm when the source
            has an MLM head, else base).
        **sparse_fields: Any :class:`SasaConfig` sparse field (``block_size``, ``window_radius``, ...).

    Returns:
        The converted model (also saved).
    """
    source = str(source)
    source_config = AutoConfig.from_pretrained(source)
    if head == "auto":
        architectures = getattr(source_config, "architectures", None) or []
        head = "masked-lm" if any(a.endswith("ForMaskedLM") for a in architectures) else "base"
    if head not in HEADS:
        raise ValueError(f"head must be 'auto' or one of {sorted(HEADS)}, got {head!r}.")
    source_model = HEADS[head][0].from_pretrained(source, dtype=torch.float32)
    try:
        tokenizer = SasaTokenizer.from_pretrained(source)  # the source's BPE vocabulary, unchanged
    except (OSError, ValueError, TypeError) as error:
        logger.warning("no tokenizer saved: could not load one from %s (%s); the input top-k source matches every "
                       "non-special token id", source, error)
        tokenizer = None
    model = convert_roberta_model(source_model, max_position_embeddings, head, tokenizer, **sparse_fields)
    model.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.model_max_length = model.config.max_sequence_length
        tokenizer.save_pretrained(output_dir)
    return model
