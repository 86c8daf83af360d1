"""SASA: a RoBERTa-shaped encoder with structure-aware block-sparse attention.

Reads top to bottom as the model: embeddings → self-attention → layer → encoder → ``SasaPreTrainedModel`` →
``SasaModel`` → heads. The block layout (window ∪ global ∪ top-k ∪ AST ∪ random, :mod:`block_layout`) is built once
per forward in :meth:`SasaModel.forward` and handed to every layer as its ``attention_mask``; the attention kernel is
chosen by ``config._attn_implementation`` (:mod:`sparse_attention`).

Parameter names match ``RobertaModel`` (under the ``sasa.`` prefix), so RoBERTa-family checkpoints convert by renaming.
This file is shipped inside checkpoints: it imports torch, transformers and its sibling files only (no tree-sitter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN, gelu
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .block_layout import (
    BlockLayout,
    ast_block_scores,
    build_layout,
    frequency_block_scores,
    shared_token_block_scores,
)
from .configuration_sasa import SasaConfig

# Imported here too (sparse_attention uses it): transformers before 5.10 copies only the model file's direct relative
# imports into its remote-code cache, so every sibling file a checkpoint needs is named in this file.
from .fused_block_attention import fused_block_attention  # noqa: F401
from .sparse_attention import (
    AUTO_BACKEND,
    DEFAULT_BACKEND,
    SUPPORTED_BACKENDS,
    eager_attention_forward,
    prepare_attention_mask,
    resolve_backend,
    sasa_blocks_attention_forward,
    sasa_flex_attention_forward,
)

logger = logging.get_logger(__name__)


class SasaEmbeddings(nn.Module):
    """Word + learned position + token-type embeddings, RoBERTa style (positions start at ``pad_token_id + 1``)."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.padding_idx = config.pad_token_id

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            position_ids = self.position_ids(input_ids, inputs_embeds)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:-1], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))

    def position_ids(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """RoBERTa positions: ``padding_idx + 1, padding_idx + 2, ...`` for real tokens, ``padding_idx`` on padding."""
        if input_ids is None:
            length = inputs_embeds.shape[1]
            positions = torch.arange(length, device=inputs_embeds.device) + self.padding_idx + 1
            return positions.expand(inputs_embeds.shape[:-1])
        real = input_ids.ne(self.padding_idx).long()
        return torch.cumsum(real, dim=1) * real + self.padding_idx


class SasaSelfAttention(nn.Module):
    """Multi-head self-attention whose kernel is picked by ``config._attn_implementation`` (see ``sparse_attention``)."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        self.config = config
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.scaling = self.attention_head_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.is_causal = False  # an encoder: SDPA must never fall back to causal attention

    def forward(self, hidden_states: torch.Tensor, attention_mask, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        query = self.query(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.key(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.value(hidden_states).view(hidden_shape).transpose(1, 2)

        backend = self.config._attn_implementation
        if backend == AUTO_BACKEND:  # SasaModel.forward chose per device: the mask's type says which
            backend = "sasa_blocks" if isinstance(attention_mask, BlockLayout) else "flex_attention"
        if backend == "sasa_blocks":
            # This checkpoint's own kernel, never another's (transformers' registry is one dict for all loaded
            # checkpoints; its "sasa_blocks" entry dispatches by the layout's code, see sparse_attention).
            attention_interface: Callable = sasa_blocks_attention_forward
        elif backend == "flex_attention":
            # SASA's own: a static-shape compile at bucketed lengths (transformers' wrapper compiles dynamic shapes,
            # which fail on the CPU from the second length on) that warns, not fails, on attention dropout.
            attention_interface = sasa_flex_attention_forward
        else:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return attn_output.reshape(*input_shape, -1).contiguous(), attn_weights


class SasaSelfOutput(nn.Module):
    def __init__(self, config: SasaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class SasaAttention(nn.Module):
    def __init__(self, config: SasaConfig):
        super().__init__()
        self.self = SasaSelfAttention(config)
        self.output = SasaSelfOutput(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attn_weights = self.self(hidden_states, attention_mask, **kwargs)
        return self.output(attention_output, hidden_states), attn_weights


class SasaIntermediate(nn.Module):
    def __init__(self, config: SasaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class SasaOutput(nn.Module):
    def __init__(self, config: SasaConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class SasaLayer(GradientCheckpointingLayer):
    """Attention + feed-forward. ``attention_mask`` is whatever the backend reads (layout, BlockMask or dense mask);
    it is a positional argument so activation checkpointing replays the layer with the same layout."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        self.attention = SasaAttention(config)
        self.intermediate = SasaIntermediate(config)
        self.output = SasaOutput(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, attn_weights = self.attention(hidden_states, attention_mask, **kwargs)
        return self.output(self.intermediate(attention_output), attention_output), attn_weights


class SasaEncoder(nn.Module):
    def __init__(self, config: SasaConfig):
        super().__init__()
        self.layer = nn.ModuleList([SasaLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self, hidden_states: torch.Tensor, attention_mask, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return hidden_states, all_hidden_states, all_attentions


class SasaPooler(nn.Module):
    """``tanh(W h_<s>)``, as in RoBERTa."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class SasaFrequencyTable(nn.Module):
    """Where the top-k blocks come from (``config.topk_source``).

    * ``"input"`` (the default): the input itself. Blocks score by the tokens they share, each shared token weighing
      ``1 / (its occurrences in the input)`` (:func:`~block_layout.shared_token_block_scores`), among the ids marked in
      ``matchable_tokens [V]`` (bool): every id but the special ones by default, the tokenizer's identifier-like
      pieces once :meth:`SasaModel.set_matchable_tokens` ran (``sasa convert``, ``sasa demo`` and the example scripts'
      ``--from_scratch`` do it). Nothing else is needed: no teacher, no corpus.
    * ``"table"``: a top-k frequency table, for each vocabulary id its ``m = config.frequency_partners`` strongest
      partners ``partner_ids [V, m]`` and their ``partner_weights [V, m]`` (``sasa topk``; installed with
      :meth:`SasaModel.set_frequency_table`, which selects this source).

    All three are persistent buffers, so a checkpoint carries its own top-k source.
    """

    def __init__(self, config: SasaConfig):
        super().__init__()
        shape = (config.vocab_size, config.frequency_partners)
        self.register_buffer("partner_ids", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("partner_weights", torch.zeros(shape))
        self.register_buffer("matchable_tokens", default_matchable_tokens(config))

    @property
    def is_empty(self) -> bool:
        """No partners kept (``frequency_partners == 0``). Decided by the shape, never by the values, so
        ``torch.compile`` traces the layout without a graph break (an all-zero table selects no blocks anyway)."""
        return self.partner_ids.shape[-1] == 0

    def block_scores(self, input_ids: torch.Tensor | None, token_valid: torch.Tensor, config: SasaConfig
                     ) -> torch.Tensor | None:
        """``[B, L]`` ids → ``[B, n, n]`` top-k block scores from ``config.topk_source``; ``None`` (with a warning,
        once) when that source cannot fill the top-k budget."""
        if config.topk_source == "table":
            if self.is_empty:
                _warn_once("config.num_topk_blocks=%d with topk_source='table', but no frequency table is installed: "
                           "the layout has no top-k blocks. Install one (sasa topk, SasaModel.set_frequency_table) or "
                           "set topk_source='input'.", config.num_topk_blocks)
                return None
            if input_ids is None:
                _warn_once("top-k blocks need input_ids (the frequency table is indexed by token id); with "
                           "inputs_embeds alone the layout has no top-k blocks.")
                return None
            return frequency_block_scores(input_ids, self.partner_ids, self.partner_weights, config.block_size)
        if input_ids is None:
            _warn_once("top-k blocks need input_ids (blocks are matched by the tokens they share); with inputs_embeds "
                       "alone the layout has no top-k blocks.")
            return None
        return shared_token_block_scores(input_ids, self.matchable_tokens, config.block_size, token_valid)

    def resize(self, vocab_size: int) -> None:
        """Follow a resized vocabulary: new ids get no partners and are matchable; dropped ids are cut off."""
        old = self.matchable_tokens.shape[0]
        keep = min(old, vocab_size)
        grown = vocab_size - keep
        ids, weights = self.partner_ids[:keep], self.partner_weights[:keep]
        matchable = self.matchable_tokens[:keep]
        if grown:
            new_ids = torch.arange(keep, vocab_size, device=ids.device)[:, None].expand(-1, ids.shape[1])
            ids = torch.cat([ids, new_ids])
            weights = torch.cat([weights, weights.new_zeros(grown, weights.shape[1])])
            matchable = torch.cat([matchable, matchable.new_ones(grown)])
        self.partner_ids, self.partner_weights, self.matchable_tokens = ids, weights, matchable


def default_matchable_tokens(config: SasaConfig) -> torch.Tensor:
    """``[V]`` bool: every id but the special ones (padding, ``<s>``, ``</s>``) may be matched by the input top-k
    source, until the tokenizer's identifier-like ids are installed (:meth:`SasaModel.set_matchable_tokens`)."""
    matchable = torch.ones(config.vocab_size, dtype=torch.bool)
    for special in (config.pad_token_id, config.bos_token_id, config.eos_token_id):
        if special is not None and 0 <= special < config.vocab_size:
            matchable[special] = False
    return matchable


def _warn_once(message: str, *args) -> None:
    """``logger.warning_once`` outside ``torch.compile`` (a log call inside a traced graph would break it)."""
    if not torch.compiler.is_compiling():
        logger.warning_once(message, *args)


class SasaPreTrainedModel(PreTrainedModel):
    config_class = SasaConfig
    base_model_prefix = "sasa"
    supports_gradient_checkpointing = True
    # FSDP auto-wrap units (accelerate wraps these classes). Not the embeddings: the masked-LM and summary heads tie
    # their output layer to the word embeddings, and a tied weight must live in one unit (the root, with the heads).
    _no_split_modules = ["SasaLayer", "SasaDecoderLayer"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_flash_attn = False
    accepts_loss_kwargs = False  # our losses are plain means: Trainer must scale them for gradient accumulation

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> list[str]:
        """Buffers ``DistributedDataParallel`` neither broadcasts before each forward nor syncs at wrapping: the top-k
        source (``frequency_table.*``, up to tens of MiB), fixed during training and loaded identically on every rank
        from the checkpoint. DDP reads this attribute of the module it wraps (it may also set it)."""
        if self._ddp_ignore_override is not None:
            return self._ddp_ignore_override
        return [name for name, _ in self.named_buffers() if f".{name}".rpartition(".")[0].endswith(".frequency_table")]

    @_ddp_params_and_buffers_to_ignore.setter
    def _ddp_params_and_buffers_to_ignore(self, names: list[str]) -> None:
        self._ddp_ignore_override = list(names)

    _ddp_ignore_override: list[str] | None = None

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """Default to ``"sasa_auto"`` (a block-sparse kernel per device); refuse kernels that cannot express a
        block-sparse mask."""
        requested = DEFAULT_BACKEND if requested_attention is None else requested_attention
        if requested not in SUPPORTED_BACKENDS:
            raise ValueError(
                f"SASA supports attn_implementation in {SUPPORTED_BACKENDS}, got {requested!r}: other kernels cannot "
                "express a per-example block-sparse mask."
            )
        return super().get_correct_attn_implementation(requested, is_init_check)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """As transformers', and the top-k source follows: new ids get no table partners and are matchable."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.base_model.frequency_table.resize(embeddings.num_embeddings)
        return embeddings

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SasaLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, SasaFrequencyTable):
            init.zeros_(module.partner_ids)
            init.zeros_(module.partner_weights)
            init.copy_(module.matchable_tokens, default_matchable_tokens(self.config))
        elif isinstance(module, nn.MultiheadAttention):  # the summary decoder's attention (not nn.Linear weights)
            init.normal_(module.in_proj_weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.in_proj_bias)


class SasaModel(SasaPreTrainedModel):
    """The SASA encoder. Inputs of any length up to ``config.max_sequence_length`` are padded to a multiple of
    ``config.block_size`` inside ``forward`` and the outputs cut back, so callers never see the block padding."""

    def __init__(self, config: SasaConfig, add_pooling_layer: bool | None = None):
        super().__init__(config)
        self.embeddings = SasaEmbeddings(config)
        self.frequency_table = SasaFrequencyTable(config)
        self.encoder = SasaEncoder(config)
        if add_pooling_layer is None:
            add_pooling_layer = config.add_pooling_layer
        self.pooler = SasaPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def set_frequency_table(self, partner_ids: torch.Tensor, partner_weights: torch.Tensor) -> None:
        """Install a top-k frequency table (``[V, m]`` ids and weights) and score top-k blocks with it: sets
        ``config.frequency_partners = m`` and ``config.topk_source = "table"``."""
        vocab = self.config.vocab_size
        if partner_ids.shape != partner_weights.shape or partner_ids.dim() != 2 or partner_ids.shape[0] != vocab:
            raise ValueError(
                f"frequency table must be two [vocab_size={vocab}, m] tensors, got ids {tuple(partner_ids.shape)} "
                f"and weights {tuple(partner_weights.shape)}."
            )
        if bool((partner_weights < 0).any()):
            raise ValueError("frequency table weights must be >= 0.")
        device = self.frequency_table.partner_ids.device
        self.frequency_table.partner_ids = partner_ids.to(device=device, dtype=torch.long)
        self.frequency_table.partner_weights = partner_weights.to(device=device, dtype=torch.float32)
        self.config.frequency_partners = partner_ids.shape[1]
        self.config.topk_source = "table"

    def set_matchable_tokens(self, matchable: torch.Tensor) -> None:
        """Restrict the input top-k source (``config.topk_source="input"``) to these ids: ``[vocab_size]`` bool, e.g.
        the tokenizer's identifier-like pieces (``sasa.frequency.identifier_vocabulary(tokenizer)``)."""
        vocab = self.config.vocab_size
        if matchable.dim() != 1 or matchable.shape[0] != vocab:
            raise ValueError(f"matchable tokens must be one [vocab_size={vocab}] tensor, got {tuple(matchable.shape)}.")
        if matchable.dtype != torch.bool and not bool(((matchable == 0) | (matchable == 1)).all()):
            raise ValueError("matchable tokens must be bool (or 0/1) flags, one per vocabulary id.")
        device = self.frequency_table.matchable_tokens.device
        self.frequency_table.matchable_tokens = matchable.to(device=device, dtype=torch.bool)

    def _padded_layout(
        self,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
    ) -> BlockLayout:
        """The block layout of a batch already padded to a multiple of ``block_size`` (shared by all layers). Built in
        fp32 whatever autocast is on, so training in bf16 and evaluating in fp32 choose the same blocks."""
        config = self.config
        with torch.autocast(attention_mask.device.type, enabled=False):
            topk_scores = None
            if config.num_topk_blocks:
                topk_scores = self.frequency_table.block_scores(input_ids, attention_mask.bool(), config)
            ast_scores = None
            if ast_links is not None and config.num_ast_blocks:
                ast_scores = ast_block_scores(ast_links, config.block_size, config.ast_reverse_weight)
            generator = None
            if config.num_random_blocks and not self.training:  # deterministic inference; fresh blocks each step
                generator = torch.Generator(device=attention_mask.device).manual_seed(config.random_seed)
            return build_layout(
                attention_mask,
                block_size=config.block_size,
                window_radius=config.window_radius,
                num_global_blocks=config.num_global_blocks,
                num_topk_blocks=config.num_topk_blocks,
                num_ast_blocks=config.num_ast_blocks,
                num_random_blocks=config.num_random_blocks,
                topk_scores=topk_scores,
                ast_scores=ast_scores,
                generator=generator,
            )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Args:
            input_ids: ``[B, L]`` token ids (or give ``inputs_embeds [B, L, hidden]``).
            attention_mask: ``[B, L]`` 1 for real tokens, 0 for padding.
            token_type_ids, position_ids: As in RoBERTa (positions default to ``pad_token_id + 1 + i``).
            ast_links: ``[B, L]`` or ``[B, L, R]`` long, the AST block information: for each token, the indices of
                the tokens it is linked to in the syntax tree (``-1`` = none). Drives the AST blocks; without it the
                layout is window + global (+ top-k from the model's frequency table, + random).
            output_attentions: Return attention probabilities (``attn_implementation="eager"`` only).
            output_hidden_states: Return the embeddings and every layer's output.
        """
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("SasaModel needs exactly one of input_ids or inputs_embeds.")
        if output_attentions and config._attn_implementation != "eager":
            raise ValueError(
                f"output_attentions=True needs attn_implementation='eager' (got {config._attn_implementation!r})."
            )

        reference = input_ids if input_ids is not None else inputs_embeds
        batch, length = reference.shape[:2]
        if length > config.max_sequence_length:
            raise ValueError(
                f"input has {length} tokens but this model's position table holds {config.max_sequence_length} "
                f"(max_position_embeddings={config.max_position_embeddings}); truncate the input or convert the "
                "checkpoint with a longer max_position_embeddings."
            )
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=reference.device)
        else:
            _require(
                ~((attention_mask[:, 0] == 0) & attention_mask.bool().any(dim=1)).any(),
                "SASA expects right-padded inputs (block 0 holds <s> and is the global block); got a left-padded "
                "attention_mask. Use padding_side='right'.",
            )
        if ast_links is not None:
            # Links from padding tokens are dropped (collators may pad ast_links with 0 instead of -1).
            ast_links = _checked_ast_links(ast_links, batch, length).masked_fill(~attention_mask.bool()[..., None], -1)

        # Pad to a whole number of blocks; the padding is masked like any other and cut off again below.
        input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids, ast_links = self._pad_to_blocks(
            input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids, ast_links
        )
        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        layout = self._padded_layout(attention_mask, input_ids, ast_links)
        backend = resolve_backend(config._attn_implementation, hidden_states.device,
                                  config.hidden_size // config.num_attention_heads,
                                  attention_dropout=self.training and config.attention_probs_dropout_prob > 0)
        # Only FlexAttention cares (no CPU backward): skip the parameter scan for every other backend.
        needs_grad = (backend == "flex_attention" and torch.is_grad_enabled()
                      and any(p.requires_grad for p in self.parameters()))
        layer_mask = prepare_attention_mask(layout, backend, needs_grad=needs_grad)
        hidden_states, all_hidden_states, all_attentions = self.encoder(
            hidden_states, layer_mask, output_hidden_states, output_attentions
        )

        # Drop the block padding (views; unconditional, so torch.compile needs no guard on the padding's size).
        hidden_states = hidden_states[:, :length]
        if all_hidden_states is not None:
            all_hidden_states = tuple(h[:, :length] for h in all_hidden_states)
        if all_attentions is not None:
            all_attentions = tuple(a[:, :, :length, :length] for a in all_attentions)
        pooled_output = self.pooler(hidden_states) if self.pooler is not None else None

        if not return_dict:
            return tuple(v for v in (hidden_states, pooled_output, all_hidden_states, all_attentions) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=pooled_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )

    def _pad_to_blocks(self, input_ids, inputs_embeds, attention_mask, token_type_ids, position_ids, ast_links):
        """Right-pad every per-token input to a multiple of ``block_size`` (padding is masked; ``None`` stays)."""
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        pad = -length % self.config.block_size
        pad_id = self.config.pad_token_id
        return (
            _pad_right(input_ids, pad, pad_id),
            _pad_right(inputs_embeds, pad, 0.0),
            _pad_right(attention_mask, pad, 0),
            _pad_right(token_type_ids, pad, 0),
            _pad_right(position_ids, pad, pad_id),
            _pad_right(ast_links, pad, -1),
        )

    def layout(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
    ) -> BlockLayout:
        """The :class:`BlockLayout` ``forward`` would use for these inputs (padded to whole blocks), for inspection."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, _, attention_mask, _, _, ast_links = self._pad_to_blocks(
            input_ids, None, attention_mask, None, None, ast_links
        )
        return self._padded_layout(attention_mask, input_ids, ast_links)


def _require(condition: torch.Tensor, message: str | Callable[[], str]) -> None:
    """``ValueError(message)`` unless ``condition`` (a 0-d bool tensor) holds. Under ``torch.compile`` the check is an
    assertion inside the graph (no graph break; a failure raises a ``RuntimeError`` carrying the message, without
    the details a callable message would add in eager mode)."""
    if torch.compiler.is_compiling():
        torch._assert_async(condition, message if isinstance(message, str) else "SASA input check failed")
    elif not bool(condition):
        raise ValueError(message if isinstance(message, str) else message())


def _checked_ast_links(ast_links: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """``ast_links`` as ``[B, L, R]`` int64 after checking its type, shape and values (token indices in ``[-1, L)``)."""
    if not isinstance(ast_links, torch.Tensor):
        raise ValueError(f"ast_links must be a torch.Tensor of token indices, got {type(ast_links).__name__}.")
    if ast_links.dtype.is_floating_point or ast_links.dtype.is_complex or ast_links.dtype == torch.bool:
        raise ValueError(
            f"ast_links must be an integer tensor of token indices (-1 = no link), got dtype {ast_links.dtype}; "
            "use the tokenizer's ast_links as they come, or .long()."
        )
    if ast_links.dim() not in (2, 3) or tuple(ast_links.shape[:2]) != (batch, length):
        raise ValueError(
            f"ast_links must have shape [batch, length] = {[batch, length]} or [batch, length, relations], got "
            f"{list(ast_links.shape)}."
        )
    ast_links = ast_links.long() if ast_links.dim() == 3 else ast_links.long()[..., None]
    out_of_range = (ast_links < -1) | (ast_links >= length)

    def describe() -> str:
        example, token, relation = (int(i) for i in out_of_range.nonzero()[0])
        value = int(ast_links[example, token, relation])
        return (
            f"ast_links[{example}, {token}, {relation}] = {value} is outside [-1, {length}): each entry is the index "
            f"of a token of the same example (-1 = no link); {int(out_of_range.sum())} entries are out of range."
        )

    _require(~out_of_range.any(), describe)
    return ast_links


def _pad_right(tensor: torch.Tensor | None, pad: int, value) -> torch.Tensor | None:
    """Pad dim 1 (the sequence) of a ``[B, L, ...]`` tensor with ``pad`` copies of ``value``. Under ``torch.compile``
    it always pads, so one graph serves every length (no guard on ``pad == 0`` or a size-1 filler)."""
    if tensor is None or (not torch.compiler.is_compiling() and pad == 0):
        return tensor
    return nn.functional.pad(tensor, (0, 0) * (tensor.dim() - 2) + (0, pad), value=value)


def _head_output(output_class, loss, logits, encoder_outputs: BaseModelOutputWithPooling, return_dict: bool):
    """A head's ``output_class(loss, logits, hidden_states, attentions)``, or the same as a tuple without ``None``s."""
    output = output_class(
        loss=loss, logits=logits, hidden_states=encoder_outputs.hidden_states, attentions=encoder_outputs.attentions
    )
    return output if return_dict else output.to_tuple()


def _encoder_of_head(config: SasaConfig) -> SasaModel:
    """The encoder of a head model, without RoBERTa's pooler (no head reads it). ``config.add_pooling_layer`` is set to
    False, so the saved checkpoint says so and ``AutoModel`` loads its encoder without inventing a pooler."""
    config.add_pooling_layer = False
    return SasaModel(config)


class SasaLMHead(nn.Module):
    """RoBERTa's masked-LM head: dense → gelu → LayerNorm → decoder (tied to the word embeddings)."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(gelu(self.dense(features))))


class SasaForMaskedLM(SasaPreTrainedModel):
    _tied_weights_keys = {
        "lm_head.decoder.weight": "sasa.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config: SasaConfig):
        super().__init__(config)
        self.sasa = _encoder_of_head(config)
        self.lm_head = SasaLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        r"""``labels [B, L]``: token ids to predict, ``-100`` where no prediction is scored. Other arguments as
        :meth:`SasaModel.forward`."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = self.sasa(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, ast_links,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.to(logits.device).view(-1))
        return _head_output(MaskedLMOutput, loss, logits, outputs, return_dict)


class SasaClassificationHead(nn.Module):
    """RoBERTa's sequence classification head on the ``<s>`` token: dropout → dense → tanh → dropout → out. For pairs
    (``config.classify_pairs``, CodeXGLUE's clone-detection model) it reads the two ``<s>`` vectors joined,
    ``[B, 2H]``."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        width = config.hidden_size * (2 if config.classify_pairs else 1)
        self.dense = nn.Linear(width, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features [B * S, L, H]`` (``S`` = 2 sequences per example for pairs, else 1) → ``logits [B, labels]``."""
        x = self.dropout(features[:, 0].reshape(-1, self.dense.in_features))
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


def _flatten_pairs(name: str, tensor: torch.Tensor | None, trailing: int) -> torch.Tensor | None:
    """``[B, 2, L, ...]`` → ``[2B, L, ...]``: both functions of every pair through the encoder in one batch."""
    if tensor is None:
        return None
    if tensor.dim() < 2 + trailing or tensor.shape[1] != 2:
        raise ValueError(
            f"with config.classify_pairs, {name} must have shape [batch, 2, length, ...] (the two functions of each "
            f"pair, e.g. from SasaDataCollator), got {list(tensor.shape)}."
        )
    return tensor.reshape(-1, *tensor.shape[2:])


class SasaForSequenceClassification(SasaPreTrainedModel):
    """Sequence classification / regression on ``<s>`` (e.g. Devign defect detection with ``num_labels=2``), or of
    *pairs* with ``config.classify_pairs`` (e.g. BigCloneBench clone detection, as CodeXGLUE's reference model).

    Pairs: each function is encoded *separately* by the shared encoder, with its own AST links (two 1024-token
    functions are two 1024-token inputs, never one 2048-token input), and the two ``<s>`` vectors are joined
    ``[B, 2H]`` and classified. Every per-token input is stacked per pair, ``input_ids [B, 2, L]``
    (``SasaDataCollator`` builds them from features whose ``input_ids`` holds two token lists).
    """

    def __init__(self, config: SasaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.sasa = _encoder_of_head(config)
        self.classifier = SasaClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""``labels [B]``: class ids (cross-entropy), floats when ``num_labels == 1`` (MSE), or ``[B, num_labels]``
        multi-hot floats for ``problem_type="multi_label_classification"``. Other arguments as
        :meth:`SasaModel.forward`; with ``config.classify_pairs`` every per-token input has a pair axis,
        ``[B, 2, L, ...]``, and ``hidden_states``/``attentions`` are the encoder's over the ``2B`` functions."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if self.config.classify_pairs:
            input_ids, attention_mask, token_type_ids, position_ids, ast_links = (
                _flatten_pairs(name, tensor, 1) for name, tensor in (
                    ("input_ids", input_ids), ("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                    ("position_ids", position_ids), ("ast_links", ast_links)))
            inputs_embeds = _flatten_pairs("inputs_embeds", inputs_embeds, 2)
        outputs = self.sasa(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, ast_links,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(logits.device))
        return _head_output(SequenceClassifierOutput, loss, logits, outputs, return_dict)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
            self.config.problem_type = problem_type
        if problem_type == "regression":
            return MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        if problem_type == "single_label_classification":
            return CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return BCEWithLogitsLoss()(logits, labels.to(logits.dtype))


@dataclass
class CodeSearchOutput(ModelOutput):
    """Output of :class:`SasaForCodeSearch`.

    Attributes:
        loss: In-batch softmax cross-entropy of the queries against the batch's code (when both are given).
        scores: ``[B_query, B_code]`` dot products ``query · code``.
        code_embeds: ``[B, H]`` code vectors.
        query_embeds: ``[B, H]`` query vectors.
    """

    loss: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    code_embeds: torch.Tensor | None = None
    query_embeds: torch.Tensor | None = None


class SasaForCodeSearch(SasaPreTrainedModel):
    """Bi-encoder for code search (CodeXGLUE NL-code-search-Adv): code and natural-language queries go through the
    same encoder (shared weights) to one vector each; training scores every query against every code of the batch
    (dot products) with a softmax over the batch, the right code on the diagonal.

    The vector is the mean of the last hidden states over the real tokens (``config.pooling="mean"``, as UniXcoder's
    code search) or the ``<s>`` token's state (``"cls"``). It is computed from the base model's output alone, so a
    plain ``AutoModel`` load of this checkpoint with the same pooling (e.g. sentence-transformers'
    ``Pooling(pooling_mode="mean")``) gives the same vectors. :meth:`encode` turns a batch of code or queries into
    vectors, :meth:`encode_batches` a whole pool of them (for ranking).
    """

    def __init__(self, config: SasaConfig):
        super().__init__(config)
        if config.pooling not in ("mean", "cls"):
            raise ValueError(f"SasaConfig.pooling must be 'mean' or 'cls', got {config.pooling!r}.")
        self.sasa = _encoder_of_head(config)
        self.post_init()

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, L]`` tokens of code (with its ``ast_links``) or of queries → ``[B, H]`` vectors (unnormalised)."""
        states = self.sasa(input_ids, attention_mask, ast_links=ast_links, return_dict=True).last_hidden_state
        if self.config.pooling == "cls":
            return states[:, 0]
        weights = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(states.dtype)[..., None]
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1)

    @torch.no_grad()
    def encode_batches(
        self,
        batches: Iterable[Mapping[str, torch.Tensor]],
        prefix: str = "",
        gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Encode a pool of code or of queries for ranking: ``[N, H]`` float32 vectors on the CPU, one per example of
        ``batches``, in order.

        Each batch is a padded batch as the tokenizer (``padding=True, return_tensors="pt"``) or ``SasaDataCollator``
        makes it; :meth:`encode` reads its ``{prefix}input_ids``, ``{prefix}attention_mask`` and
        ``{prefix}ast_links`` (``prefix="query_"``: the queries of a code-search batch), moved to the model's device,
        in eval mode (the model's mode is restored after). ``gather`` (e.g. Accelerate's ``gather_for_metrics``)
        collects each batch's vectors from every process.
        """
        was_training = self.training
        self.eval()
        vectors = []
        try:
            for batch in batches:
                inputs = {name: batch[prefix + name].to(self.device)
                          for name in ("input_ids", "attention_mask", "ast_links") if prefix + name in batch}
                embeds = self.encode(**inputs)
                vectors.append((embeds if gather is None else gather(embeds)).float().cpu())
        finally:
            self.train(was_training)
        return torch.cat(vectors) if vectors else torch.empty(0, self.config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CodeSearchOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, ast_links: ``[B, L]`` the code (``ast_links`` from the tokenizer).
            query_input_ids, query_attention_mask: ``[B, Lq]`` the natural-language queries, query ``i`` describing
                code ``i``.
            return_loss: Compute the in-batch loss (default: when both code and queries are given).
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if input_ids is None and query_input_ids is None:
            raise ValueError("SasaForCodeSearch needs input_ids (code), query_input_ids (queries), or both.")
        code = self.encode(input_ids, attention_mask, ast_links) if input_ids is not None else None
        query = self.encode(query_input_ids, query_attention_mask) if query_input_ids is not None else None
        scores = loss = None
        if code is not None and query is not None:
            scores = query @ code.T
            if return_loss is not False:
                loss = CrossEntropyLoss()(scores, torch.arange(scores.shape[0], device=scores.device))
        output = CodeSearchOutput(loss=loss, scores=scores, code_embeds=code, query_embeds=query)
        return output if return_dict else output.to_tuple()



class SasaDecoderLayer(GradientCheckpointingLayer):
    """One layer of the summary decoder, as ``nn.TransformerDecoderLayer`` (post-norm): causal self-attention over the
    summary so far, attention to the encoder's states of the code, feed-forward."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        heads, width, dropout = config.num_attention_heads, config.hidden_size, config.hidden_dropout_prob
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=config.attention_probs_dropout_prob,
                                               batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=config.attention_probs_dropout_prob,
                                                batch_first=True)
        self.intermediate = nn.Linear(width, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, width)
        self.norms = nn.ModuleList([nn.LayerNorm(width, eps=config.layer_norm_eps) for _ in range(3)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor, encoder_states: torch.Tensor, causal_mask: torch.Tensor,
                padding_mask: torch.Tensor | None, encoder_padding_mask: torch.Tensor | None) -> torch.Tensor:
        attended, _ = self.self_attn(hidden_states, hidden_states, hidden_states, attn_mask=causal_mask,
                                     key_padding_mask=padding_mask, need_weights=False)
        hidden_states = self.norms[0](hidden_states + self.dropout(attended))
        attended, _ = self.cross_attn(hidden_states, encoder_states, encoder_states,
                                      key_padding_mask=encoder_padding_mask, need_weights=False)
        hidden_states = self.norms[1](hidden_states + self.dropout(attended))
        fed = self.output(self.dropout(self.activation(self.intermediate(hidden_states))))
        return self.norms[2](hidden_states + self.dropout(fed))


class SasaSummaryHead(nn.Module):
    """CodeXGLUE's code-to-text output: dense → tanh → projection onto the vocabulary (tied to the word embeddings)."""

    def __init__(self, config: SasaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.dense(hidden_states)))


class SasaForCodeSummarization(SasaPreTrainedModel, GenerationMixin):
    """Code summarization (CodeXGLUE code-to-text): the SASA encoder reads the (long) code with its AST links, a
    Transformer decoder of ``config.num_decoder_layers`` layers (6, as CodeXGLUE) writes the summary while attending
    to it. The decoder embeds summary tokens with the encoder's embedding module and predicts them through a projection
    tied to the word embeddings, as CodeXGLUE's model does.

    ``labels [B, T]``: the summary's token ids (``-100`` where not scored); the decoder reads them shifted right behind
    ``decoder_start_token_id``. ``generate()`` runs beam search (``num_beams=10`` as CodeXGLUE, or any generation
    setting); the decoder keeps no key/value cache (it re-reads the summary so far at each step, cheap next to the
    encoder for summaries of a few dozen tokens).
    """

    _tied_weights_keys = {"lm_head.decoder.weight": "sasa.embeddings.word_embeddings.weight"}

    def __init__(self, config: SasaConfig):
        config.is_encoder_decoder = True
        if getattr(config, "decoder_start_token_id", None) is None:
            config.decoder_start_token_id = config.bos_token_id
        super().__init__(config)
        self.sasa = _encoder_of_head(config)
        self.decoder_layers = nn.ModuleList([SasaDecoderLayer(config) for _ in range(config.num_decoder_layers)])
        self.lm_head = SasaSummaryHead(config)
        self.post_init()
        self.generation_config.use_cache = False  # no key/value cache: each step re-reads the summary so far

    def get_encoder(self, modality: str | None = None) -> SasaModel:
        return self.sasa

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def decode(self, decoder_input_ids: torch.Tensor, encoder_states: torch.Tensor,
               encoder_attention_mask: torch.Tensor | None = None,
               decoder_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` summary tokens so far + ``[B, L, H]`` encoder states → ``[B, T, V]`` next-token logits."""
        length = decoder_input_ids.shape[1]
        hidden_states = self.sasa.embeddings(decoder_input_ids, None, None, None)
        causal_mask = torch.ones(length, length, dtype=torch.bool, device=hidden_states.device).triu(1)
        padding_mask = None if decoder_attention_mask is None else ~decoder_attention_mask.bool()
        encoder_padding_mask = None if encoder_attention_mask is None else ~encoder_attention_mask.bool()
        for layer in self.decoder_layers:
            hidden_states = layer(hidden_states, encoder_states, causal_mask, padding_mask, encoder_padding_mask)
        return self.lm_head(hidden_states)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        ast_links: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutputWithPooling | tuple | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, ast_links: ``[B, L]`` the code, as for :class:`SasaModel`.
            decoder_input_ids: ``[B, T]`` the summary so far (default: ``labels`` shifted right).
            decoder_attention_mask: ``[B, T]`` 1 for real summary tokens.
            encoder_outputs: The encoder's output, when already computed (``generate`` passes it).
            labels: ``[B, T]`` the summary to predict, ``-100`` where not scored.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if encoder_outputs is None:
            encoder_outputs = self.sasa(input_ids, attention_mask, ast_links=ast_links, return_dict=True)
        encoder_states = encoder_outputs[0]
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("SasaForCodeSummarization needs decoder_input_ids or labels (the summary).")
            decoder_input_ids = self._shift_right(labels)
        logits = self.decode(decoder_input_ids, encoder_states, attention_mask, decoder_attention_mask)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.reshape(-1, logits.shape[-1]), labels.to(logits.device).reshape(-1))
        output = Seq2SeqLMOutput(loss=loss, logits=logits, encoder_last_hidden_state=encoder_states)
        return output if return_dict else output.to_tuple()

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, encoder_outputs=None, attention_mask=None,
                                      **kwargs) -> dict:
        """Each step reads the whole summary so far (``input_ids`` are the decoder's): there is no key/value cache to
        hand only the newest token to, whatever ``generation_config.use_cache`` says (``from_pretrained`` of a
        checkpoint without a ``generation_config.json``, e.g. a converted encoder, leaves it unset, which means on)."""
        return {"decoder_input_ids": input_ids, "encoder_outputs": encoder_outputs, "attention_mask": attention_mask}

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """``[start, y_0, ..., y_{T-2}]``: what the decoder reads to predict ``labels`` (``-100`` read as padding)."""
        shifted = labels.new_full(labels.shape, self.config.pad_token_id)
        shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.config.pad_token_id)
        shifted[:, 0] = self.config.decoder_start_token_id
        return shifted


# One registration per Auto class. A code-search checkpoint loads its bi-encoder with AutoModelForTextEncoding, while
# its AutoModel stays the plain encoder (pooled as config.pooling, it gives encode()'s vectors: sentence-transformers
# and other AutoModel users get the same embeddings).
SasaModel.register_for_auto_class("AutoModel")
SasaForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
SasaForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
SasaForCodeSearch.register_for_auto_class("AutoModelForTextEncoding")
SasaForCodeSummarization.register_for_auto_class("AutoModelForSeq2SeqLM")
