"""Test set-up: offline, a private HF_HOME, and small SASA configurations."""

import os
import tempfile

# Read by huggingface_hub/transformers at import time: set before anything imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="sasa-hf-home-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from sasa import SasaConfig  # noqa: E402


def tiny_config(**overrides) -> SasaConfig:
    """A SASA config small enough for CPU tests (dropout off so outputs are deterministic)."""
    fields = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=514,
        block_size=8,
        window_radius=1,
        num_global_blocks=1,
        num_topk_blocks=2,
        num_ast_blocks=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    fields.update(overrides)
    return SasaConfig(**fields)


def padded_batch(lengths: list[int], vocab_size: int = 120, pad_token_id: int = 1, seed: int = 0):
    """Right-padded random ids ``[B, max(lengths)]`` and their attention mask (ids avoid the special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(3, vocab_size, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        input_ids[row, length:] = pad_token_id
    input_ids[:, 0] = 0
    return input_ids, attention_mask


@pytest.fixture
def config() -> SasaConfig:
    return tiny_config()
