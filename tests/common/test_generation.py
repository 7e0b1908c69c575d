"""Battery (causal LMs): cached == uncached, prefill + decode == full forward, left padding == alone, pipeline."""

import pytest
import torch
from transformers import DynamicCache


@pytest.fixture
def lm(spec):
    if not spec.can_generate:
        pytest.skip(f"{spec.name} is not a generative model")
    return spec.build(seed=1).eval()


def test_cached_greedy_equals_uncached(spec, lm):
    prompt = spec.make_inputs(lm.config, batch=2, seq=7, seed=5)["input_ids"]
    cached = lm.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True)
    uncached = lm.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (2, 19)


def test_prefill_then_decode_equals_full_forward(spec, lm):
    ids = spec.make_inputs(lm.config, batch=2, seq=18, seed=6)["input_ids"]
    with torch.no_grad():
        full = lm(ids, use_cache=False).logits
        prefix = 11
        out = lm(ids[:, :prefix], use_cache=True)
        cache = out[lm.config.use_cache and "cache" in out and "cache" or "past_key_values"]
        assert isinstance(cache, DynamicCache)
        steps = [out.logits]
        for t in range(prefix, ids.shape[1]):
            out = lm(ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_left_padded_batch_equals_each_sample_alone(spec, lm):
    pad = lm.config.pad_token_id
    assert pad is not None, "the tiny config must set pad_token_id"
    long = spec.make_inputs(lm.config, batch=1, seq=9, seed=7)["input_ids"][0]
    short = spec.make_inputs(lm.config, batch=1, seq=5, seed=8)["input_ids"][0]
    batch = torch.full((2, 9), pad)
    batch[0] = long
    batch[1, 4:] = short
    mask = (torch.arange(9)[None] >= torch.tensor([[0], [4]])).long()
    together = lm.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=pad)
    alone_long = lm.generate(long[None], max_new_tokens=8, do_sample=False, pad_token_id=pad)
    alone_short = lm.generate(short[None], max_new_tokens=8, do_sample=False, pad_token_id=pad)
    assert torch.equal(together[0], alone_long[0])
    assert torch.equal(together[1, 4:], alone_short[0])
    with torch.no_grad():
        padded_logits = lm(batch, attention_mask=mask).logits[1, 4:]
        alone_logits = lm(short[None]).logits[0]
    torch.testing.assert_close(padded_logits, alone_logits, rtol=1e-4, atol=1e-5)


def test_sampling_and_beam_search_run(spec, lm):
    prompt = spec.make_inputs(lm.config, batch=2, seq=5, seed=9)["input_ids"]
    torch.manual_seed(0)
    sampled = lm.generate(prompt, max_new_tokens=6, do_sample=True, top_k=10)
    beams = lm.generate(prompt, max_new_tokens=6, num_beams=3, do_sample=False)
    beams_uncached = lm.generate(prompt, max_new_tokens=6, num_beams=3, do_sample=False, use_cache=False)
    assert sampled.shape == beams.shape == (2, 11)
    assert torch.equal(beams, beams_uncached)
