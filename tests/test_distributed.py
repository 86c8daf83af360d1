"""The example scripts under two processes on CPU (torchrun, gloo): the loss falls, both ranks end with equal
weights (DDP kept them in step), and evaluation ranks the whole eval split gathered from both ranks."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import tiny_config
from sasa import SasaForCodeSearch, SasaModel, SasaTokenizer
from sasa.retrieval import encode_texts, retrieval_mrr
from test_examples_retrieval_generation import prepared, stdlib_rows, write_jsonl

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# Runs an example script's main() in each process, then records what this rank's model holds after training.
WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    sys.path.insert(0, sys.argv[1])
    import transformers

    record_dir, script, argv = sys.argv[2], sys.argv[3], sys.argv[4:]
    train = transformers.Trainer.train

    def train_and_record(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        weights = b"".join(p.detach().cpu().numpy().tobytes() for p in self.model.parameters())
        rank = int(os.environ["RANK"])
        with open(os.path.join(record_dir, f"rank-{rank}.json"), "w") as handle:
            json.dump(dict(rank=rank, world_size=self.args.world_size, digest=hashlib.sha256(weights).hexdigest(),
                           backend=str(self.args.ddp_backend or self.accelerator.state.backend),
                           losses=[h["loss"] for h in self.state.log_history if "loss" in h]), handle)
        return result

    transformers.Trainer.train = train_and_record
    __import__(script).main(argv)
    """
)


@pytest.mark.slow
def test_code_search_trains_in_two_gloo_processes_with_equal_weights(tmp_path, bpe_dir):
    tokenizer = SasaTokenizer.from_pretrained(bpe_dir)
    torch.manual_seed(0)
    SasaModel(tiny_config(vocab_size=len(tokenizer))).save_pretrained(tmp_path / "sasa")
    tokenizer.save_pretrained(tmp_path / "sasa")
    rows = stdlib_rows()
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    validation = write_jsonl(tmp_path / "valid.jsonl", rows[:37])  # odd: the last eval batch is padded, then cut
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    argv = ["--model_name_or_path", str(tmp_path / "sasa"), "--train_file", train, "--do_train",
            "--validation_file", validation, "--do_eval", "--per_device_eval_batch_size", "8",
            "--output_dir", str(tmp_path / "out"), "--max_source_length", "128", "--max_query_length", "32",
            "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--max_steps", "24",
            "--logging_steps", "4", "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
            "--seed", "0", "--dataloader_pin_memory", "false", "--use_cpu"]  # CPU-only: DDP needs --use_cpu
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29512", str(worker), EXAMPLES, str(tmp_path), "run_code_search",
                             *argv], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert "gloo" in ranks[0]["backend"].lower(), ranks[0]["backend"]
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP kept both replicas identical
    losses = ranks[0]["losses"]
    assert len(losses) >= 4 and losses[-1] < losses[0], losses

    # The eval split gathered from both ranks, each example once: the MRR of the whole split, recomputed here.
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    model = SasaForCodeSearch.from_pretrained(tmp_path / "out").eval()
    texts = prepared(validation)
    code = encode_texts(model, tokenizer, texts["code"], texts["language"], max_length=128)
    queries = encode_texts(model, tokenizer, texts["text"], None, max_length=32)
    assert results["eval_samples"] == 37
    assert SasaTokenizer.from_pretrained(tmp_path / "out").language == "python"  # the data's one language, saved
    assert results["eval_mrr"] == pytest.approx(retrieval_mrr(queries, code), abs=1e-6)
