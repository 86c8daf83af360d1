"""Test set-up: offline, a private HF_HOME, and small SASA configurations."""

import logging
import os
import subprocess
import sys
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


def run_fresh_process(script: str, *arguments: str, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -c script arguments...`` in a fresh interpreter, as a user's process would start: offline, an
    empty private ``HF_HOME`` (no cached remote code), no ``PYTHONPATH``, one thread. Asserts that it exits with 0
    (showing the end of its stderr otherwise) and returns it (stdout and stderr as text)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=tempfile.mkdtemp(prefix="fresh-hf-home-"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", script, *arguments], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def links_touching(links: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``[B, L, R]`` bool: the AST links of a padded batch (``[B, L, R]``) that start or end at a ``hidden`` position
    (``[B, L]`` bool); what the rule that a hidden token keeps no link forbids."""
    length = links.shape[1]
    links = links.long()
    valid = (links >= 0) & (links < length)
    target = torch.gather(hidden[..., None].expand_as(links), 1, links.clamp(0, length - 1))
    return (hidden[..., None] & (links >= 0)) | (valid & target)


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


SNIPPETS = os.path.join(os.path.dirname(__file__), "data", "snippets")


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory) -> str:
    """A RoBERTa-style byte-level BPE vocabulary (vocab.json + merges.txt) trained here on the test snippets.

    Special tokens sit where RoBERTa/CodeBERT have them: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4.
    """
    from tokenizers import ByteLevelBPETokenizer

    files = sorted(os.path.join(SNIPPETS, name) for name in os.listdir(SNIPPETS))
    trainer = ByteLevelBPETokenizer()
    trainer.train(files, vocab_size=400, min_frequency=2, show_progress=False,
                  special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    directory = tmp_path_factory.mktemp("bpe")
    trainer.save_model(str(directory))
    return str(directory)


@pytest.fixture
def tokenizer(bpe_dir):
    from sasa import SasaTokenizer

    return SasaTokenizer.from_pretrained(bpe_dir)


def read_snippet(name: str) -> str:
    with open(os.path.join(SNIPPETS, name), encoding="utf-8") as handle:
        return handle.read()


#: Python source that makes the package "not installed" in a fresh process (any import of ``sasa`` fails): a
#: subprocess script starts with it to prove a checkpoint works from its own code alone.
WITHOUT_SASA = """
import sys

class BlockSasa:
    def find_spec(self, name, path=None, target=None):
        if name == "sasa" or name.startswith("sasa."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, BlockSasa())
"""


class Recorder(logging.Handler):
    """Keeps the messages a logger emits (attach it to the ``transformers`` logger, say, and read ``messages``)."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tiny training runs (``pytestmark = pytest.mark.usefixtures("one_thread")``): on
    a small machine shared with other jobs, two threads waiting on each other made them some 30 times slower, and
    their results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
