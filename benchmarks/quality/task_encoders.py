"""The encoders the task benchmark compares, at the same width, depth, heads, FFN, vocabulary and tokenizer.

Every encoder is a transformers model (SASA's own, or ``RobertaModel``, ``BigBirdModel``, ``LongformerModel``) wrapped
in :class:`Encoder`, which gives them one call, ``encoder(input_ids, attention_mask, token_type_ids, ast_links) ->
[B, L, H]``, and the same initialisation recipe; they differ only in which keys each query attends to.

:data:`ENCODERS` names the rows: SASA's default layout and its ablations (window + global only, 3 random blocks as
BigBird chooses them, AST blocks only, top-k blocks only), RoBERTa cut at 512 tokens (CodeBERT's setting) and over the
whole length (full attention: the ceiling), BigBird (``block_sparse``) and Longformer at their usual settings and at
SASA's budget of attended keys per query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

#: SASA's default layout attends, per query block of 32 tokens, to 3 window blocks + 1 global block + 3 extra blocks:
#: 7 blocks of 32 = 224 keys. The peers "at SASA's budget" get as many keys per query.
SASA_KEYS_PER_QUERY = 7 * 32


@dataclass(frozen=True)
class EncoderSpec:
    kind: str  # "sasa", "roberta", "bigbird", "longformer"
    settings: dict = field(default_factory=dict)  # SasaConfig layout overrides, or the peer's attention settings
    truncate: int | None = None  # read only the first tokens (RoBERTa-512)
    description: str = ""
    #: Time per pre-training step relative to full attention, as measured on 2 CPU cores (docs/task-quality.md). The
    #: benchmark only uses it to start the slowest runs first, so that parallel jobs end together.
    cost: float = 0.5


ENCODERS = {
    "SASA (default layout)": EncoderSpec("sasa", {}, description="window + global + 1 top-k (input) + 2 AST blocks"),
    "SASA window + global": EncoderSpec("sasa", dict(num_topk_blocks=0, num_ast_blocks=0),
                                        description="Longformer-like: no extra blocks"),
    "SASA random 3": EncoderSpec("sasa", dict(num_topk_blocks=0, num_ast_blocks=0, num_random_blocks=3),
                                 description="BigBird's choice of 3 extra blocks, inside SASA"),
    "SASA AST only": EncoderSpec("sasa", dict(num_topk_blocks=0), description="the 2 AST blocks, no top-k"),
    "SASA top-k only": EncoderSpec("sasa", dict(num_ast_blocks=0, num_topk_blocks=3),
                                   description="3 top-k (input) blocks, no AST"),
    "SASA AST 3": EncoderSpec("sasa", dict(num_topk_blocks=0, num_ast_blocks=3),
                              description="3 AST blocks in place of 2 AST + 1 top-k"),
    "SASA AST 2 + top-k 2": EncoderSpec("sasa", dict(num_topk_blocks=2), description="a 4th extra block: top-k"),
    "SASA block 16": EncoderSpec("sasa", dict(block_size=16, window_radius=3, num_global_blocks=2, num_topk_blocks=2,
                                              num_ast_blocks=4),
                                 description="the default's keys per query in blocks of 16: window 3 blocks each "
                                             "side, 2 global, 2 top-k, 4 AST"),
    "SASA top-k 2 + AST 1": EncoderSpec("sasa", dict(num_topk_blocks=2, num_ast_blocks=1),
                                        description="the default's 3 extra blocks: 2 top-k, 1 AST"),
    "SASA block 16, top-k 4 + AST 2": EncoderSpec(
        "sasa", dict(block_size=16, window_radius=3, num_global_blocks=2, num_topk_blocks=4, num_ast_blocks=2),
        description="the default's keys per query in blocks of 16: window 3 each side, 2 global, 4 top-k, 2 AST"),
    "SASA block 16, top-k 6": EncoderSpec(
        "sasa", dict(block_size=16, window_radius=3, num_global_blocks=2, num_topk_blocks=6, num_ast_blocks=0),
        description="the default's keys per query in blocks of 16: window 3 each side, 2 global, 6 top-k"),
    "RoBERTa-512": EncoderSpec("roberta", {}, truncate=512, description="full attention, input cut at 512 tokens",
                               cost=0.35),
    "RoBERTa full": EncoderSpec("roberta", {}, description="full attention (SDPA) over the whole input: the ceiling",
                                cost=1.0),
    "BigBird": EncoderSpec("bigbird", dict(block_size=64, num_random_blocks=3),
                           description="block_sparse, block 64, 3 random blocks (its usual settings)", cost=1.6),
    "BigBird (SASA budget)": EncoderSpec("bigbird", dict(block_size=32, num_random_blocks=2),
                                         description="block 32, 2 random blocks: 7 blocks of 32 keys, as SASA", cost=1.1),
    "Longformer": EncoderSpec("longformer", dict(attention_window=512),
                              description="window 512, <s> global (its usual settings)", cost=4.5),
    "Longformer (SASA budget)": EncoderSpec("longformer", dict(attention_window=SASA_KEYS_PER_QUERY),
                                            description=f"window {SASA_KEYS_PER_QUERY}, <s> global", cost=1.4),
}


class Encoder(nn.Module):
    """One encoder of :data:`ENCODERS`: ``forward(input_ids, attention_mask, token_type_ids, ast_links) -> [B, L, H]``.

    ``truncate``: the model reads only the first ``truncate`` tokens; the states of the rest are zeros (a pointer head
    can never find anything there). BigBird inputs are padded to ``max_length`` (BigBird switches to full attention
    for shorter inputs, for good: transformers #20031).
    """

    def __init__(self, spec: EncoderSpec, model: nn.Module, max_length: int):
        super().__init__()
        self.spec, self.model, self.max_length = spec, model, max_length

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                ast_links: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = input_ids.shape
        kind, keep = self.spec.kind, min(length, self.spec.truncate or length)
        inputs = dict(input_ids=input_ids[:, :keep], attention_mask=attention_mask[:, :keep])
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids[:, :keep]
        if kind == "sasa":
            if ast_links is not None:
                inputs["ast_links"] = ast_links[:, :keep]
        elif kind == "longformer":
            inputs["global_attention_mask"] = torch.zeros_like(inputs["attention_mask"])
            inputs["global_attention_mask"][:, 0] = 1  # <s> global, as SASA's first block
        elif kind == "bigbird" and keep < self.max_length:
            pad = self.max_length - keep
            pad_id = self.model.config.pad_token_id
            inputs = {name: nn.functional.pad(tensor, (0, pad), value=pad_id if name == "input_ids" else 0)
                      for name, tensor in inputs.items()}
        states = self.model(**inputs).last_hidden_state[:, :keep]
        if kind == "bigbird" and self.model.config.attention_type != "block_sparse":
            raise RuntimeError("BigBird switched to full attention: its inputs must be padded to max_length")
        if keep < length:
            states = nn.functional.pad(states, (0, 0, 0, length - keep))
        return states

    @torch.no_grad()
    def density(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                ast_links: torch.Tensor | None = None) -> float:
        """Computed (query, key) token pairs / real token pairs, for these inputs (SASA: its layout of them)."""
        real = attention_mask.sum(1).double()
        length = attention_mask.shape[1]
        kind = self.spec.kind
        if kind == "sasa":
            layout = self.model.layout(input_ids, attention_mask, ast_links)
            pairs = layout.token_mask() & attention_mask.bool()[:, :, None]
            return float(pairs.sum() / (real**2).sum())
        if kind == "roberta":
            keep = torch.clamp(real, max=self.spec.truncate or length)
            return float((keep**2).sum() / (real**2).sum())
        if kind == "bigbird":
            size, random = self.spec.settings["block_size"], self.spec.settings["num_random_blocks"]
            keys = (3 + 2 + random) * size
        else:
            keys = self.spec.settings["attention_window"] + 1
        return float((real * torch.clamp(real, max=keys)).sum() / (real**2).sum())


def build_encoder(name: str, vocab_size: int, type_vocab_size: int, max_length: int, size: dict, pad_token_id: int,
                  seed: int, matchable: torch.Tensor | None = None, spec: EncoderSpec | None = None) -> Encoder:
    """The encoder ``name`` of :data:`ENCODERS` (or ``spec``, a layout of one's own) with random weights from
    ``seed`` (dropout off) and the recipe's initialisation (:func:`mimetic_init`). ``size``: ``hidden_size``,
    ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``. ``matchable``: the ids SASA's input top-k
    source matches (the tokenizer's identifiers)."""
    from transformers import BigBirdConfig, BigBirdModel, LongformerConfig, LongformerModel, RobertaConfig, RobertaModel

    from sasa import SasaConfig, SasaModel

    spec = spec or ENCODERS[name]
    common = dict(vocab_size=vocab_size, type_vocab_size=type_vocab_size, pad_token_id=pad_token_id,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **size)
    torch.manual_seed(seed)
    if spec.kind == "sasa":
        config = SasaConfig(max_position_embeddings=max_length + pad_token_id + 1, random_seed=seed, **common,
                            **spec.settings)
        model = SasaModel._from_config(config, attn_implementation="sasa_blocks", add_pooling_layer=False)
        if matchable is not None:
            model.set_matchable_tokens(matchable)
    elif spec.kind == "roberta":
        config = RobertaConfig(max_position_embeddings=(spec.truncate or max_length) + pad_token_id + 1, **common)
        model = RobertaModel._from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
    elif spec.kind == "bigbird":
        config = BigBirdConfig(max_position_embeddings=max_length, attention_type="block_sparse", **common,
                               **spec.settings)
        model = BigBirdModel(config, add_pooling_layer=False)
    else:
        window = spec.settings["attention_window"]
        config = LongformerConfig(max_position_embeddings=max_length + window + pad_token_id + 1,
                                  attention_window=window, **common)
        model = LongformerModel(config, add_pooling_layer=False)
    mimetic_init(model, seed)
    return Encoder(spec, model, max_length)


MIMETIC_STD = 0.15


@torch.no_grad()
def mimetic_init(model: nn.Module, seed: int, std: float = MIMETIC_STD) -> None:
    """The learned probe's initialisation for every encoder alike (``benchmarks/quality/mlm_probe.py``): query = key weights
    (mimetic: tokens with the same features attend to each other from the start), identity value and attention-output
    projections (what is attended arrives unchanged). Longformer's global projections get the same."""
    generator = torch.Generator().manual_seed(seed)
    for name, module in model.named_modules():
        if not name.endswith("attention.self"):
            continue
        hidden = module.query.weight.shape[0]
        eye = torch.eye(hidden)
        shared = torch.randn(hidden, hidden, generator=generator) * std
        for suffix in ("", "_global"):
            query, key, value = (getattr(module, part + suffix, None) for part in ("query", "key", "value"))
            if query is None:
                continue
            query.weight.copy_(shared)
            key.weight.copy_(shared)
            value.weight.copy_(eye)
            for linear in (query, key, value):
                linear.bias.zero_()
        output = model.get_submodule(name.rsplit(".", 1)[0]).output.dense
        output.weight.copy_(eye)
        output.bias.zero_()
