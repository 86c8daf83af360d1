"""The demo's quiet checkpoint I/O: transformers' progress bars and LOAD REPORT go, other warnings stay."""

import logging
import os

import pytest
from transformers.utils import logging as hf_logging

from conftest import tiny_config
from sasa import SasaForSequenceClassification, SasaModel
from sasa.demo import quiet_checkpoint_io


class Recorder(logging.Handler):
    """Keeps the messages transformers logs (they reach the ``transformers`` logger unless a filter drops them)."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_head_onto_base_checkpoint(path) -> dict:
    """Load a classification head from a base-model checkpoint: a lossy load that makes transformers report."""
    SasaModel(tiny_config()).save_pretrained(path)
    _, loading_info = SasaForSequenceClassification.from_pretrained(path, output_loading_info=True)
    return loading_info


def test_quiet_checkpoint_io_drops_bars_and_load_report_but_not_other_warnings(tmp_path):
    recorder = Recorder()
    logging.getLogger("transformers").addHandler(recorder)
    try:
        bars_before = hf_logging.is_progress_bar_enabled()
        with quiet_checkpoint_io():
            assert not hf_logging.is_progress_bar_enabled()
            load_head_onto_base_checkpoint(tmp_path / "quiet")
            hf_logging.get_logger("transformers.modeling_utils").warning("a real problem")
        assert hf_logging.is_progress_bar_enabled() == bars_before
        assert not any("LOAD REPORT" in message for message in recorder.messages)
        assert "a real problem" in recorder.messages

        load_head_onto_base_checkpoint(tmp_path / "loud")
        assert any("LOAD REPORT" in message for message in recorder.messages)  # the filter is gone again
    finally:
        logging.getLogger("transformers").removeHandler(recorder)


@pytest.mark.slow
def test_the_main_job_runs_end_to_end_on_a_few_functions(tmp_path, capsys):
    """`make demo`'s path on a few functions and steps: the checkpoint is Hub-ready and reloads without the package to
    identical vectors, and the output ends with the reloaded model's predictions (the full run's MRR is the demo's)."""
    from sasa.demo import run_demo

    result = run_demo(output_dir=str(tmp_path / "checkpoint"), max_steps=2, train_limit=24, test_limit=9)
    files = set(os.listdir(tmp_path / "checkpoint"))
    assert {"README.md", "config.json", "model.safetensors", "modeling_sasa.py", "tokenizer.json",
            "tokenization_sasa.py", "modules.json", "sentence_transformers_module.py"} <= files  # and an ST model
    card = (tmp_path / "checkpoint" / "README.md").read_text()
    assert "mrr" in card and "trust_remote_code=True" in card and "license: apache-2.0" in card
    assert result["reload_max_difference"] == 0.0
    assert 0.0 < result["baseline_mrr"] <= 1.0 and 0.0 < result["mrr"] <= 1.0
    output = capsys.readouterr().out
    assert output.count("  query: ") == 3 and output.rstrip().splitlines()[-1].startswith("done in")
