"""The demo's quiet checkpoint I/O: transformers' progress bars and LOAD REPORT go, other warnings stay."""

import logging
import os

import pytest
from transformers.utils import logging as hf_logging

from conftest import Recorder, tiny_config
from sasa import SasaForSequenceClassification, SasaModel
from sasa.demo import quiet_checkpoint_io


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
def test_the_main_job_learns_and_its_checkpoint_reloads_without_the_package(tmp_path, capsys):
    """`make demo`'s path on part of the data: fine-tuning beats the untrained model by a clear margin, the checkpoint
    is Hub-ready and reloads without the package to identical vectors, and the output ends with the reloaded model's
    predictions."""
    from sasa.demo import run_demo

    result = run_demo(output_dir=str(tmp_path / "checkpoint"), max_steps=40, train_limit=160, test_limit=40)
    assert result["mrr"] > result["baseline_mrr"] + 0.1, result
    files = set(os.listdir(tmp_path / "checkpoint"))
    assert {"README.md", "config.json", "model.safetensors", "modeling_sasa.py", "tokenizer.json",
            "tokenization_sasa.py", "modules.json", "sentence_transformers_module.py"} <= files  # and an ST model
    card = (tmp_path / "checkpoint" / "README.md").read_text()
    assert "mrr" in card and "trust_remote_code=True" in card and "license: apache-2.0" in card
    assert result["reload_max_difference"] == 0.0
    output = capsys.readouterr().out
    assert output.count("  query: ") == 3 and output.rstrip().splitlines()[-1].startswith("done in")


def test_the_main_job_fails_loudly_when_fine_tuning_does_not_learn(tmp_path, monkeypatch, capsys):
    """No training step: the model is the untrained baseline, so `sasa demo` must fail (exit 1) and save nothing."""
    from transformers import Trainer

    from sasa import demo
    from sasa.cli import main

    monkeypatch.setattr(Trainer, "train", lambda self, *args, **kwargs: None)
    with pytest.raises(demo.DemoDidNotLearn, match="does NOT beat"):
        demo.run_demo(output_dir=str(tmp_path / "never"), max_steps=5, train_limit=16, test_limit=9)
    assert not (tmp_path / "never").exists()

    def fails(**kwargs):
        raise demo.DemoDidNotLearn("result: test-pool MRR 0.05 after fine-tuning does NOT beat the baseline")

    monkeypatch.setattr(demo, "run_demo", fails)
    assert main(["demo", "--output-dir", str(tmp_path / "cli")]) == 1
    assert "does NOT beat" in capsys.readouterr().err
