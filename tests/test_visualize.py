import matplotlib.image
import pytest
import torch

from conftest import SNIPPETS, tiny_config
from sasa import SasaModel, SasaTokenizer
from sasa.block_layout import build_layout
from sasa.cli import main
from sasa.visualize import pattern_counts, plot_layout


def test_pattern_counts_account_for_every_selected_block():
    n = 12
    layout = build_layout(torch.ones(1, n * 8, dtype=torch.bool), 8, num_topk_blocks=2, num_ast_blocks=1,
                          num_random_blocks=1, topk_scores=torch.rand(1, n, n), ast_scores=torch.rand(1, n, n),
                          generator=torch.Generator().manual_seed(0))
    counts = pattern_counts(layout)
    assert sum(counts.values()) == int(layout.block_mask.sum())
    assert all(counts[name] > 0 for name in ("window", "global", "top-k", "ast", "random"))


def test_plot_layout_writes_a_png(tmp_path):
    layout = build_layout(torch.ones(1, 256, dtype=torch.bool), 8)
    plot_layout(layout, tmp_path / "layout.png")
    image = matplotlib.image.imread(tmp_path / "layout.png")
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] > image.shape[0]


@pytest.mark.parametrize("snippet", ["Example.java", "example.py"])
def test_show_layout_command_draws_a_source_file(tmp_path, bpe_dir, capsys, snippet):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    SasaModel(tiny_config(vocab_size=len(tokenizer), block_size=4)).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    output = tmp_path / "layout.png"
    assert main(["show-layout", f"{SNIPPETS}/{snippet}", "--checkpoint", str(tmp_path / "model"),
                 "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "density" in printed and output.exists()
    ast_pairs = int(printed.split("ast ")[1].split(",")[0])
    assert ast_pairs > 0  # the file's syntax tree added blocks
