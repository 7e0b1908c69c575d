"""Battery (causal LMs): cached == uncached, prefill + decode == full forward, left padding == alone, pipeline; and
(token inputs) the attention_mask capability a spec declares.

The check bodies are plain functions of (model, inputs, ...) so that tests/common/test_state.py runs the same checks
on a recurrent toy model whose cache is not a DynamicCache (tests/toy_recurrent.py).
"""

import pytest
import torch
from model_specs import CACHE_NAME


def check_cached_greedy_equals_uncached(model, prompt, max_new_tokens=12):
    """Greedy generation with the cache gives exactly the tokens of generation without it."""
    cached = model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (prompt.shape[0], prompt.shape[1] + max_new_tokens)


def check_prefill_then_decode_equals_full_forward(
    model, ids, prefix, state_output_key=CACHE_NAME, state_input_kwarg=CACHE_NAME
):
    """The logits of one uncached pass over `ids` equal those of a prefill of `prefix` tokens followed by one token
    at a time, the cache returned by each call passed back to the next. The cache may be any object the model
    accepts back (a transformers `Cache` or the model's own state); no check assumes a DynamicCache."""
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :prefix], use_cache=True)
        steps = [out.logits]
        for t in range(prefix, ids.shape[1]):
            cache = getattr(out, state_output_key)
            assert cache is not None, f"forward(use_cache=True) returned no `{state_output_key}`"
            out = model(ids[:, t : t + 1], use_cache=True, **{state_input_kwarg: cache})
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def check_attention_mask_capability(model, inputs, supports_attention_mask, output_key="logits"):
    """A model that supports attention_mask gives with an all-ones mask exactly the outputs of no mask; one that does
    not refuses a padding mask with a ValueError that names attention_mask (it is never ignored silently)."""
    inputs = {k: v for k, v in inputs.items() if k not in ("attention_mask", "labels")}
    ids = inputs["input_ids"]
    with torch.no_grad():
        if supports_attention_mask:
            plain = model(**inputs)[output_key]
            masked = model(**inputs, attention_mask=torch.ones_like(ids))[output_key]
            torch.testing.assert_close(masked, plain, rtol=0, atol=0)
        else:
            padding = torch.ones_like(ids)
            padding[-1, 0] = 0
            with pytest.raises(ValueError, match="attention_mask"):
                model(**inputs, attention_mask=padding)


@pytest.fixture
def lm(spec):
    if not spec.can_generate:
        pytest.skip(f"{spec.name} is not a generative model")
    return spec.build(seed=1).eval()


def test_cached_greedy_equals_uncached(spec, lm):
    prompt = spec.make_inputs(lm.config, batch=2, seq=7, seed=5)["input_ids"]
    check_cached_greedy_equals_uncached(lm, prompt)


def test_prefill_then_decode_equals_full_forward(spec, lm):
    ids = spec.make_inputs(lm.config, batch=2, seq=18, seed=6)["input_ids"]
    check_prefill_then_decode_equals_full_forward(
        lm, ids, prefix=11, state_output_key=spec.state_output_key, state_input_kwarg=spec.state_input_kwarg
    )


def test_attention_mask_capability(spec):
    """The `supports_attention_mask` flag of the spec holds (token inputs)."""
    if spec.input_kind != "tokens":
        pytest.skip(f"{spec.name} reads {spec.input_kind}, not tokens: no attention_mask")
    model = spec.build(seed=1).eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=9, seed=4)
    check_attention_mask_capability(model, inputs, spec.supports_attention_mask, spec.output_key)


def test_left_padded_batch_equals_each_sample_alone(spec, lm):
    if not spec.supports_attention_mask:
        pytest.skip(f"{spec.name} does not support attention_mask: no padded batches")
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
