"""SASA configuration: the RoBERTa-family encoder fields plus the block-sparse layout fields.

This file is shipped inside every checkpoint (``save_pretrained`` copies it), so it imports only transformers.
"""

from __future__ import annotations

from transformers import PretrainedConfig

#: Every Auto class a SASA checkpoint can be loaded with. Written into ``config.json`` so that
#: ``AutoModel``/``AutoModelFor...`` all work with ``trust_remote_code=True`` whichever head was saved.
SASA_AUTO_MAP = {
    "AutoConfig": "configuration_sasa.SasaConfig",
    "AutoModel": "modeling_sasa.SasaModel",
    "AutoModelForMaskedLM": "modeling_sasa.SasaForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_sasa.SasaForSequenceClassification",
    "AutoModelForSeq2SeqLM": "modeling_sasa.SasaForCodeSummarization",
    "AutoModelForTextEncoding": "modeling_sasa.SasaForCodeSearch",
}

#: Where top-k blocks come from: the input itself (shared tokens, rare ones first) or an installed frequency table.
TOPK_SOURCES = ("input", "table")
#: The block layout's fields and what each sets; their defaults are ``SasaConfig``'s (:func:`layout_defaults`).
#: ``sasa convert`` has one flag per field, and the benchmarks build layouts from these fields.
LAYOUT_FIELDS = {
    "block_size": "tokens per block",
    "window_radius": "window blocks on each side of a query block",
    "num_global_blocks": "leading blocks that attend to and from every block",
    "num_topk_blocks": "top-k blocks per query block",
    "topk_source": "where top-k scores come from: 'input' (the tokens blocks share) or 'table' (sasa topk)",
    "num_ast_blocks": "AST blocks per query block",
    "ast_reverse_weight": "weight of AST links counted backwards (a declaration's block gets its far uses); 0: forward "
                          "only",
    "num_random_blocks": "random blocks per query block (BigBird-style, for comparison)",
}


class SasaConfig(PretrainedConfig):
    r"""Configuration of a SASA encoder (Liu et al., SIGIR 2022): RoBERTa with structure-aware block-sparse attention.

    The encoder fields mean what they mean in ``RobertaConfig``. The sparse fields describe the block layout: the
    (padded) sequence is cut into blocks of ``block_size`` tokens and each query block attends to the union of

    * ``window_radius`` blocks on each side of itself (sliding window),
    * the first ``num_global_blocks`` blocks, which also attend to every block (global),
    * ``num_topk_blocks`` blocks with the highest top-k score: by default the blocks sharing the query block's rarer
      tokens (``topk_source="input"``), or a frequency table's choice (``"table"``),
    * ``num_ast_blocks`` blocks the query block has the most AST links to (needs ``ast_links`` in the input),
    * ``num_random_blocks`` random blocks (BigBird-style; 0 by default, for comparison only).

    Args:
        vocab_size: Size of the token vocabulary.
        hidden_size: Width of the encoder.
        num_hidden_layers: Number of encoder layers.
        num_attention_heads: Attention heads per layer; must divide ``hidden_size``.
        intermediate_size: Width of the feed-forward layer.
        hidden_act: Feed-forward activation.
        hidden_dropout_prob: Dropout on embeddings and sub-layer outputs.
        attention_probs_dropout_prob: Dropout on attention probabilities (must be 0 to train with FlexAttention).
        max_position_embeddings: Size of the learned position table. RoBERTa reserves the first
            ``pad_token_id + 1`` rows, so the longest input is ``max_position_embeddings - pad_token_id - 1`` tokens
            (2048 with the default 2050).
        type_vocab_size: Number of token types (1 for RoBERTa).
        initializer_range: Std of the normal initialiser.
        layer_norm_eps: LayerNorm epsilon.
        pad_token_id, bos_token_id, eos_token_id: Special token ids (RoBERTa's 1, 0, 2).
        classifier_dropout: Dropout in the classification head (``hidden_dropout_prob`` when ``None``).
        tie_word_embeddings: Tie the masked-LM decoder to the input embeddings.
        block_size: Tokens per block (32 as in the original release; 64/128 suit GPU kernels).
        window_radius: Window blocks on each side of a query block (1 → 3 blocks).
        num_global_blocks: Leading blocks that attend to and from every block (1 holds ``<s>``).
        num_topk_blocks: Extra key blocks per query block chosen by the top-k score (default 1; see ``topk_source``).
        num_ast_blocks: Extra key blocks per query block chosen by the AST link score (default 2; needs ``ast_links``).
            The default budgets, relations and reverse weight were chosen by ``benchmarks/quality/layout_quality.py``
            (``docs/layout-quality.md``).
        ast_reverse_weight: How much an AST link from a token in block ``j`` to one in block ``i`` counts towards query
            block ``i`` choosing key block ``j`` (links from ``i`` to ``j`` count 1): a declaration's block also gets
            the blocks of its far uses. 0 counts forward links only.
        num_random_blocks: Extra random key blocks per query block (BigBird-style ablation).
        random_seed: Seed of the random blocks in eval mode, so inference is deterministic.
        topk_source: Where the top-k scores come from. ``"input"`` (default): the input itself, blocks scored by the
            tokens they share, each weighing ``1 / (its occurrences in the input)``, among the model's matchable
            tokens (the tokenizer's identifier-like pieces once installed, else every non-special id); needs nothing
            installed. ``"table"``: the model's top-k frequency table (``sasa topk``, with or without a teacher),
            selected when one is installed.
        frequency_partners: Partners kept per vocabulary id in the model's top-k frequency table (0 = no table). Set by
            ``SasaModel.set_frequency_table``.
        num_decoder_layers: Layers of the summary decoder of ``SasaForCodeSummarization`` (6, as CodeXGLUE's
            code-to-text model); the encoder-only heads ignore it.
        classify_pairs: ``SasaForSequenceClassification`` classifies *pairs* of sequences (inputs ``[B, 2, L]``, each
            encoded on its own, the two ``<s>`` vectors joined), as CodeXGLUE's clone-detection model.
        pooling: How ``SasaForCodeSearch`` turns a sequence into one vector: ``"mean"`` over the real tokens (as
            UniXcoder's code search) or ``"cls"`` (the ``<s>`` token's state).
        add_pooling_layer: ``SasaModel`` has RoBERTa's pooler (``pooler_output``). The task heads never read it and
            set this to False, so ``AutoModel`` loads their encoder without an untrained pooler.
    """

    model_type = "sasa"

    def __init__(
        self,
        vocab_size: int = 50265,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 2050,
        type_vocab_size: int = 1,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        classifier_dropout: float | None = None,
        tie_word_embeddings: bool = True,
        block_size: int = 32,
        window_radius: int = 1,
        num_global_blocks: int = 1,
        num_topk_blocks: int = 1,
        num_ast_blocks: int = 2,
        ast_reverse_weight: float = 0.25,
        num_random_blocks: int = 0,
        random_seed: int = 0,
        topk_source: str = "input",
        frequency_partners: int = 0,
        num_decoder_layers: int = 6,
        classify_pairs: bool = False,
        pooling: str = "mean",
        add_pooling_layer: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.classifier_dropout = classifier_dropout
        self.tie_word_embeddings = tie_word_embeddings
        self.block_size = block_size
        self.window_radius = window_radius
        self.num_global_blocks = num_global_blocks
        self.num_topk_blocks = num_topk_blocks
        self.num_ast_blocks = num_ast_blocks
        self.ast_reverse_weight = ast_reverse_weight
        self.num_random_blocks = num_random_blocks
        self.random_seed = random_seed
        self.topk_source = topk_source
        self.frequency_partners = frequency_partners
        self.num_decoder_layers = num_decoder_layers
        self.classify_pairs = classify_pairs
        self.pooling = pooling
        self.add_pooling_layer = add_pooling_layer
        kwargs.setdefault("auto_map", dict(SASA_AUTO_MAP))
        super().__init__(**kwargs)
        self._validate_sasa_fields()

    @property
    def max_sequence_length(self) -> int:
        """Longest input (in tokens, special tokens included) the position table can encode."""
        return self.max_position_embeddings - self.pad_token_id - 1

    def _validate_sasa_fields(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "type_vocab_size", "block_size")
        non_negative = ("window_radius", "num_global_blocks", "num_topk_blocks", "num_ast_blocks",
                        "num_random_blocks", "pad_token_id", "frequency_partners", "num_decoder_layers")
        for name in positive + non_negative:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"SasaConfig.{name} must be an int, got {value!r} ({type(value).__name__}).")
            if name in positive and value <= 0:
                raise ValueError(f"SasaConfig.{name} must be > 0, got {value}.")
            if value < 0:
                raise ValueError(f"SasaConfig.{name} must be >= 0, got {value}.")
        if self.topk_source not in TOPK_SOURCES:
            raise ValueError(f"SasaConfig.topk_source must be one of {TOPK_SOURCES}, got {self.topk_source!r}.")
        weight = self.ast_reverse_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight < float("inf"):
            raise ValueError(f"SasaConfig.ast_reverse_weight must be a finite number >= 0, got {weight!r}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"SasaConfig.{name} must be in [0, 1), got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"SasaConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"SasaConfig.num_attention_heads ({self.num_attention_heads})."
            )
        if self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError(
                f"SasaConfig.max_position_embeddings ({self.max_position_embeddings}) must exceed pad_token_id + 1 "
                f"({self.pad_token_id + 1}): RoBERTa positions start after the padding index."
            )


def layout_defaults() -> dict:
    """The default value of every :data:`LAYOUT_FIELDS` field, as ``SasaConfig()`` sets it."""
    defaults = SasaConfig()
    return {name: getattr(defaults, name) for name in LAYOUT_FIELDS}


SasaConfig.register_for_auto_class()
