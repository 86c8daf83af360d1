"""GPU paths: FlexAttention training and bf16 inference. Skipped where no CUDA device exists (CI has none).

Not yet run on a GPU: no device was lent to the session that wrote them (see the README's status notes).
"""

import copy

import pytest
import torch

from conftest import padded_batch, tiny_config
from sasa import SasaModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def models(config, backends):
    torch.manual_seed(0)
    reference = SasaModel._from_config(copy.deepcopy(config), attn_implementation=backends[0])
    other = SasaModel._from_config(copy.deepcopy(config), attn_implementation=backends[1])
    other.load_state_dict(reference.state_dict())
    return reference.cuda(), other.cuda()


@pytest.mark.parametrize("block_size", [32, 128])
def test_flex_attention_trains_on_gpu_like_sasa_blocks(block_size):
    config = tiny_config(block_size=block_size, hidden_size=64, num_attention_heads=4, max_position_embeddings=1026)
    reference, flex = models(config, ("sasa_blocks", "flex_attention"))
    input_ids, attention_mask = padded_batch([1000, 700], config.vocab_size)
    inputs = dict(input_ids=input_ids.cuda(), attention_mask=attention_mask.cuda())
    real = attention_mask.bool().cuda()
    outputs = []
    for model in (reference, flex):
        model.train()
        hidden = model(**inputs).last_hidden_state
        hidden[real].pow(2).mean().backward()
        outputs.append(hidden.detach())
    assert (outputs[0] - outputs[1])[real].abs().max() <= 1e-4
    for (name, p_ref), (_, p) in zip(reference.named_parameters(), flex.named_parameters()):
        if p_ref.grad is not None:
            assert (p.grad - p_ref.grad).abs().max() <= 1e-4, name


def test_bf16_inference_matches_fp32_closely():
    config = tiny_config(hidden_size=64, num_attention_heads=4, max_position_embeddings=1026)
    fp32, _ = models(config, ("sasa_blocks", "sasa_blocks"))
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    input_ids, attention_mask = padded_batch([1000, 700], config.vocab_size)
    inputs = dict(input_ids=input_ids.cuda(), attention_mask=attention_mask.cuda())
    with torch.no_grad():
        expected = fp32.eval()(**inputs).last_hidden_state
        for backend in ("sasa_blocks", "flex_attention"):
            bf16.set_attn_implementation(backend)
            actual = bf16.eval()(**inputs).last_hidden_state.float()
            real = attention_mask.bool().cuda()
            assert (actual - expected)[real].abs().max() <= 0.1, backend
