"""The example scripts under two processes on CPU (torchrun, gloo): the loss falls, both ranks end with equal
weights (DDP kept them in step), and evaluation ranks the whole eval split gathered from both ranks. DDP, FSDP2 and
FSDP1 as users wrap the model: the frequency table is not broadcast, tied weights stay in one unit."""

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


# Two gloo processes, each on the same batch: DDP leaves the frequency table alone; FSDP2 (fully_shard) and FSDP1
# auto-wrapped by the model's _no_split_modules (as accelerate wraps) train exactly as one process does, the output
# layer still tied to the word embeddings. Also records what the former policy (embeddings in their own unit) did.
SHARDING_WORKER = textwrap.dedent(
    """
    import copy, json, os, sys
    tests_dir, record_dir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, tests_dir)
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from conftest import padded_batch, tiny_config
    from sasa import SasaForCodeSummarization, SasaForMaskedLM

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    record = dict(rank=rank)


    def inputs(config, seed=0):
        ids, mask = padded_batch([60, 45], config.vocab_size, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        links = torch.randint(-1, 60, (2, 60, 2), generator=generator)
        labels = ids.masked_fill(torch.rand(ids.shape, generator=generator) > 0.3, -100)
        return dict(input_ids=ids, attention_mask=mask, ast_links=links, labels=labels)


    def build(cls, config):
        torch.manual_seed(0)
        model = cls(config)
        vocab = config.vocab_size
        generator = torch.Generator().manual_seed(1)
        model.base_model.set_frequency_table(torch.randint(0, vocab, (vocab, 3), generator=generator),
                                             torch.rand(vocab, 3, generator=generator))
        return model


    config = tiny_config(num_decoder_layers=1)
    batch = inputs(config)

    # DDP: the frequency table is neither synced nor broadcast (a rank's own copy survives a step), parameters are.
    for ignore in (True, False):
        model = build(SasaForMaskedLM, config)
        if not ignore:
            model._ddp_params_and_buffers_to_ignore = []
        ddp = DistributedDataParallel(model)  # broadcast_buffers=True, as Trainer/accelerate leave it by default
        if rank == 1:
            model.sasa.frequency_table.partner_weights.fill_(7.0)
        ddp(**batch).loss.backward()
        kept = bool((model.sasa.frequency_table.partner_weights == 7.0).all()) if rank == 1 else None
        record[f"ddp_table_kept_with_ignore_{ignore}"] = kept
        if ignore:
            record["ddp_ignored"] = sorted(ddp.parameters_to_ignore)


    def three_steps(net):
        # the losses of 3 SGD steps on the batch
        optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
        losses = []
        for _ in range(3):
            loss = net(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses

    def fsdp2_losses(cls, no_split):
        from torch.distributed.fsdp import fully_shard

        model = build(cls, config)
        reference = copy.deepcopy(model)
        for module in list(model.modules()):
            if type(module).__name__ in no_split:
                fully_shard(module)
        fully_shard(model)
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        losses = [three_steps(model), three_steps(reference)]
        return dict(sharded=losses[0], single=losses[1], tied=tied)


    def fsdp1_losses(cls):
        import functools
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

        model = build(cls, config)
        reference = copy.deepcopy(model)
        classes = {type(m) for m in model.modules() if type(m).__name__ in model._no_split_modules}
        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=classes)
        wrapped = FullyShardedDataParallel(model, auto_wrap_policy=policy, device_id=torch.device("cpu"),
                                           use_orig_params=True)
        losses = [three_steps(wrapped), three_steps(reference)]
        return dict(sharded=losses[0], single=losses[1])


    try:
        record["fsdp1"] = fsdp1_losses(SasaForMaskedLM)
    except Exception as error:
        record["fsdp1"] = dict(error=f"{type(error).__name__}: {error}"[:800])

    for cls in (SasaForMaskedLM, SasaForCodeSummarization):
        try:
            record[f"fsdp2_{cls.__name__}"] = fsdp2_losses(cls, build(cls, config)._no_split_modules)
        except Exception as error:
            record[f"fsdp2_{cls.__name__}"] = dict(error=f"{type(error).__name__}: {error}"[:500])
    try:
        record["fsdp2_old_policy"] = fsdp2_losses(SasaForMaskedLM, {"SasaEmbeddings", "SasaLayer"})
    except Exception as error:
        record["fsdp2_old_policy"] = dict(error=f"{type(error).__name__}: {error}"[:500])

    with open(os.path.join(record_dir, f"rank-{rank}.json"), "w") as handle:
        json.dump(record, handle)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_ddp_skips_the_frequency_table_and_fsdp_keeps_tied_weights_in_one_unit(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(SHARDING_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29514", str(worker), os.path.dirname(os.path.abspath(__file__)),
                             str(tmp_path)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    table = ["sasa.frequency_table.matchable_tokens", "sasa.frequency_table.partner_ids",
             "sasa.frequency_table.partner_weights"]
    assert ranks[0]["ddp_ignored"] == table
    assert ranks[1]["ddp_table_kept_with_ignore_True"]  # not broadcast from rank 0 before the forward
    assert not ranks[1]["ddp_table_kept_with_ignore_False"]  # the control: DDP would broadcast it every step
    for record in ranks:
        for name in ("fsdp2_SasaForMaskedLM", "fsdp2_SasaForCodeSummarization", "fsdp1"):
            assert "error" not in record[name], record[name]
            assert record[name]["sharded"] == pytest.approx(record[name]["single"], abs=1e-5), name
            assert record[name].get("tied", True), name
        assert "shared with a parameter already managed by another FSDP group" in record["fsdp2_old_policy"]["error"]
