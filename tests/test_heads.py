"""The task heads: clone detection (pair classification), code search (bi-encoder), code summarization (seq2seq)."""

import pytest
import torch

from conftest import padded_batch, tiny_config
from sasa import SasaForCodeSearch, SasaForCodeSummarization, SasaForSequenceClassification, SasaModel


def links_for(lengths, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    links = torch.randint(-1, min(lengths), (len(lengths), width, 2), generator=generator)
    return links


def pair_batch(seed=0):
    """Two pairs of functions ([B, 2, L]) of different lengths, with AST links."""
    input_ids, attention_mask = padded_batch([45, 30, 20, 41], seed=seed)
    ast_links = links_for([45, 30, 20, 41], 45, seed)
    return dict(input_ids=input_ids.view(2, 2, 45), attention_mask=attention_mask.view(2, 2, 45),
                ast_links=ast_links.view(2, 2, 45, 2))


def pair_classifier(**overrides):
    return SasaForSequenceClassification(tiny_config(num_labels=2, classify_pairs=True, **overrides))


def test_pair_model_encodes_each_function_separately():
    torch.manual_seed(0)
    model = pair_classifier().eval()
    inputs = pair_batch()
    with torch.no_grad():
        logits = model(**inputs).logits
        first_tokens = []
        for pair in range(2):
            for member in range(2):  # each function alone, with its own links, unpadded
                length = int(inputs["attention_mask"][pair, member].sum())
                state = model.sasa(inputs["input_ids"][pair, member, None, :length],
                                   ast_links=inputs["ast_links"][pair, member, None, :length]).last_hidden_state
                first_tokens.append(state[0, 0])
        expected = model.classifier(torch.stack(first_tokens)[:, None])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_pair_model_rejects_unpaired_inputs():
    model = pair_classifier()
    with pytest.raises(ValueError, match=r"\[batch, 2, length, ...\]"):
        model(input_ids=torch.full((2, 30), 5))


def test_code_search_scores_every_query_against_every_code():
    torch.manual_seed(0)
    model = SasaForCodeSearch(tiny_config()).eval()
    code_ids, code_mask = padded_batch([45, 30, 38])
    query_ids, query_mask = padded_batch([12, 9, 5], seed=1)
    links = links_for([45, 30, 38], 45)
    with torch.no_grad():
        output = model(input_ids=code_ids, attention_mask=code_mask, ast_links=links,
                       query_input_ids=query_ids, query_attention_mask=query_mask)
        code = model.encode(code_ids, code_mask, links)
        query = model.encode(query_ids, query_mask)
    torch.testing.assert_close(output.scores, query @ code.T)
    expected_loss = torch.nn.functional.cross_entropy(query @ code.T, torch.arange(3))
    torch.testing.assert_close(output.loss, expected_loss)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_code_search_vectors_are_the_base_models_pooled_states(tmp_path, pooling):
    """A code-search checkpoint loaded as a plain encoder (AutoModel, sentence-transformers' mean/CLS pooling) gives
    the same vectors as encode()."""
    torch.manual_seed(0)
    model = SasaForCodeSearch(tiny_config(pooling=pooling)).eval()
    model.save_pretrained(tmp_path)
    base = SasaModel.from_pretrained(tmp_path).eval()
    model = SasaForCodeSearch.from_pretrained(tmp_path).eval()
    code_ids, code_mask = padded_batch([45, 30])
    with torch.no_grad():
        states = base(code_ids, code_mask).last_hidden_state
        if pooling == "cls":
            expected = states[:, 0]
        else:
            expected = torch.stack([states[0, :45].mean(0), states[1, :30].mean(0)])
        torch.testing.assert_close(model.encode(code_ids, code_mask), expected)


def test_encode_batches_encodes_a_pool_in_order_and_restores_the_mode():
    """A pool given as padded batches (code with links, or the query_ group of a code-search batch) → one [N, H]
    float32 CPU tensor, the same vectors as encode() on each batch; gather sees every batch's vectors."""
    torch.manual_seed(0)
    model = SasaForCodeSearch(tiny_config())
    code_ids, code_mask = padded_batch([45, 30, 38])
    links = links_for([45, 30, 38], 45)
    query_ids, query_mask = padded_batch([12, 9, 5], seed=1)
    batches = [dict(input_ids=code_ids[:2], attention_mask=code_mask[:2], ast_links=links[:2],
                    query_input_ids=query_ids[:2], query_attention_mask=query_mask[:2]),
               dict(input_ids=code_ids[2:], attention_mask=code_mask[2:], ast_links=links[2:],
                    query_input_ids=query_ids[2:], query_attention_mask=query_mask[2:])]
    gathered = []
    code = model.encode_batches(batches, gather=lambda vectors: gathered.append(vectors) or vectors)
    queries = model.encode_batches(batches, prefix="query_")
    assert model.training  # put back as it was
    assert code.shape == (3, 32) and code.dtype == torch.float32 and len(gathered) == 2
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(code, torch.cat([model.encode(code_ids[:2], code_mask[:2], links[:2]),
                                                    model.encode(code_ids[2:], code_mask[2:], links[2:])]))
        torch.testing.assert_close(queries, torch.cat([model.encode(query_ids[:2], query_mask[:2]),
                                                       model.encode(query_ids[2:], query_mask[2:])]))
    assert model.encode_batches([]).shape == (0, 32)


def test_unknown_pooling_is_a_clear_error():
    with pytest.raises(ValueError, match="pooling"):
        SasaForCodeSearch(tiny_config(pooling="max"))


def summarizer(seed=0):
    torch.manual_seed(seed)
    return SasaForCodeSummarization(tiny_config(num_decoder_layers=2, initializer_range=0.3)).eval()


def test_summarizer_loss_reads_labels_shifted_right_and_skips_ignored_positions():
    model = summarizer()
    input_ids, attention_mask = padded_batch([45, 30])
    labels = torch.randint(5, 100, (2, 7), generator=torch.Generator().manual_seed(3))
    labels[1, 5:] = -100
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        decoder_input_ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), labels[:, :-1].clamp(min=1)], dim=1)
        decoder_input_ids[1, 6] = 1  # the ignored label is read as padding
        encoder_states = model.sasa(input_ids, attention_mask).last_hidden_state
        logits = model.decode(decoder_input_ids, encoder_states, attention_mask)
    torch.testing.assert_close(output.logits, logits)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(output.loss, expected)


def test_summarizer_decoder_is_causal():
    model = summarizer()
    input_ids, attention_mask = padded_batch([45])
    states = model.sasa(input_ids, attention_mask).last_hidden_state
    prefix = torch.tensor([[0, 17, 33, 9]])
    with torch.no_grad():
        short = model.decode(prefix[:, :2], states)
        full = model.decode(prefix, states)
    torch.testing.assert_close(full[:, :2], short, atol=1e-5, rtol=1e-5)


def test_generate_greedy_equals_a_manual_greedy_loop_with_the_ast_links():
    model = summarizer()
    input_ids, attention_mask = padded_batch([45, 30])
    links = links_for([45, 30], 45)
    with torch.no_grad():
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, ast_links=links,
                                   max_length=6, num_beams=1, do_sample=False)
        states = model.sasa(input_ids, attention_mask, ast_links=links).last_hidden_state
        manual = torch.zeros(2, 1, dtype=torch.long)
        for _ in range(5):
            next_token = model.decode(manual, states, attention_mask)[:, -1].argmax(-1)
            manual = torch.cat([manual, next_token[:, None]], dim=1)
    done = (manual == model.config.eos_token_id).cumsum(1) > 0  # after </s>, generate pads
    expected = torch.where(done & (manual != model.config.eos_token_id), model.config.pad_token_id, manual)
    assert torch.equal(generated, expected[:, : generated.shape[1]])


def test_beam_search_finds_a_summary_at_least_as_likely_as_greedy():
    model = summarizer(seed=1)
    input_ids, attention_mask = padded_batch([45])
    with torch.no_grad():
        states = model.sasa(input_ids, attention_mask).last_hidden_state

        def log_prob(sequence):
            logits = model.decode(sequence[:, :-1], states, attention_mask).log_softmax(-1)
            return logits.gather(-1, sequence[:, 1:, None]).sum().item()

        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, min_length=6, max_length=6,
                      length_penalty=0.0)
        greedy = model.generate(**kwargs, num_beams=1, do_sample=False)
        beam = model.generate(**kwargs, num_beams=4, do_sample=False)
    assert beam.shape == greedy.shape == (1, 6)
    assert log_prob(beam) >= log_prob(greedy) - 1e-5


@pytest.mark.parametrize("head", ["pair", "search", "summarization"])
def test_activation_checkpointing_gives_the_same_gradients(head):
    torch.manual_seed(0)
    config = tiny_config(num_labels=2, num_decoder_layers=2)
    if head == "pair":
        config.classify_pairs = True
    model = {"pair": SasaForSequenceClassification, "search": SasaForCodeSearch,
             "summarization": SasaForCodeSummarization}[head](config).train()
    if head == "pair":
        inputs = dict(pair_batch(), labels=torch.tensor([0, 1]))
    else:
        input_ids, attention_mask = padded_batch([45, 30])
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, ast_links=links_for([45, 30], 45))
        if head == "search":
            inputs.update(query_input_ids=input_ids[:, :9], query_attention_mask=attention_mask[:, :9])
        else:
            inputs["labels"] = torch.randint(5, 100, (2, 6), generator=torch.Generator().manual_seed(2))

    def gradients():
        model.zero_grad()
        model(**inputs).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing_enable()
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_generate_ignores_use_cache_for_a_checkpoint_without_generation_config(tmp_path):
    """from_pretrained of a checkpoint without generation_config.json (e.g. a converted encoder) leaves use_cache
    unset, i.e. on: generate must still read the whole summary so far at every step."""
    summarizer(seed=2).save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    model = SasaForCodeSummarization.from_pretrained(tmp_path).eval()
    input_ids, attention_mask = padded_batch([45, 30])
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, max_length=8, no_repeat_ngram_size=1)
    with torch.no_grad():
        cached = model.generate(**kwargs, use_cache=True)
        uncached = model.generate(**kwargs, use_cache=False)
        beams = model.generate(**kwargs, num_beams=3, use_cache=True)
        beams_uncached = model.generate(**kwargs, num_beams=3, use_cache=False)
    assert len(set(uncached[0, 1:].tolist())) > 1  # a varied summary, or the comparison proves nothing
    assert torch.equal(cached, uncached) and torch.equal(beams, beams_uncached)
