"""Battery (stateful models): the state is returned by forward and accepted back, and a sequence fed in two chunks with
the state carried equals one pass. No check assumes the state is a DynamicCache.

The same check functions run on tests/toy_recurrent.py, a recurrent causal LM whose cache is its own object (not a
transformers Cache), together with the generation checks of test_generation.py: they pass on it, and the chunked-state
check fails on a variant that drops the carried state, so the check can fail.
"""

import pytest
import torch
from model_specs import CACHE_NAME, split_along_time
from test_generation import (
    check_attention_mask_capability,
    check_cached_greedy_equals_uncached,
    check_prefill_then_decode_equals_full_forward,
)
from toy_recurrent import ToyRecurrentCache, build_toy


def check_state_round_trip_and_chunks(
    model,
    inputs,
    at,
    output_key="logits",
    state_output_key=CACHE_NAME,
    state_input_kwarg=CACHE_NAME,
    split_inputs=split_along_time,
):
    """Forward returns a state (`state_output_key`, not None) that it accepts back (`state_input_kwarg`), and the
    outputs of the chunks before and after time step `at`, the state of the first passed to the second, equal the
    outputs of one pass over the whole sequence. Returns the state of the second call."""
    first, second = split_inputs(inputs, at)
    whole = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        full = model(**whole)[output_key]
        out = model(**first, use_cache=True)
        state = getattr(out, state_output_key)
        assert state is not None, f"forward(use_cache=True) returned no `{state_output_key}`"
        out = model(**second, use_cache=True, **{state_input_kwarg: state})
        carried = getattr(out, state_output_key)
        assert carried is not None, f"forward given a state returned no `{state_output_key}`"
        chunked = torch.cat([model(**first)[output_key], out[output_key]], dim=1)
    torch.testing.assert_close(chunked, full, rtol=1e-4, atol=1e-5)
    return carried


def test_state_carried_across_chunks_equals_one_pass(spec):
    if not spec.stateful:
        pytest.skip(f"{spec.name} is not stateful (spec.stateful=False): no state to carry")
    model = spec.build(seed=2).eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=16, seed=3)
    check_state_round_trip_and_chunks(
        model,
        inputs,
        at=7,
        output_key=spec.output_key,
        state_output_key=spec.state_output_key,
        state_input_kwarg=spec.state_input_kwarg,
        split_inputs=spec.split_inputs,
    )


# The toy recurrent model (tests/toy_recurrent.py): its cache is a `ToyRecurrentCache`, not a transformers Cache.


def _toy_ids(batch=2, seq=16, seed=0):
    return torch.randint(1, 37, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_toy_state_check_passes_without_dynamic_cache():
    """The chunked-state check passes on a model whose state is its own object, not a DynamicCache."""
    ids = _toy_ids()
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    state = check_state_round_trip_and_chunks(build_toy(), inputs, at=7)
    assert isinstance(state, ToyRecurrentCache)
    assert state.get_seq_length() == ids.shape[1]


def test_toy_state_check_fails_when_the_state_is_dropped():
    """On a variant that ignores the state passed back, the chunked-state check raises: the check can fail."""
    ids = _toy_ids()
    with pytest.raises(AssertionError, match="not close"):
        check_state_round_trip_and_chunks(build_toy(drop_state=True), {"input_ids": ids}, at=7)


def test_toy_generation_checks_pass_without_dynamic_cache():
    """Cached greedy == uncached greedy and prefill + token-by-token decode == full forward hold for the toy model,
    whose generate path never builds a DynamicCache."""
    model = build_toy(seed=1)
    check_cached_greedy_equals_uncached(model, _toy_ids(seq=7, seed=5))
    check_prefill_then_decode_equals_full_forward(model, _toy_ids(seq=18, seed=6), prefix=11)
    generated = model.generate(_toy_ids(seq=5), max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    assert isinstance(getattr(generated, CACHE_NAME), ToyRecurrentCache)


def test_toy_prefill_decode_check_fails_when_the_state_is_dropped():
    """The prefill + decode check also detects a dropped state."""
    with pytest.raises(AssertionError, match="not close"):
        check_prefill_then_decode_equals_full_forward(build_toy(drop_state=True), _toy_ids(seq=18, seed=6), prefix=11)


def test_toy_attention_mask_capability_checks():
    """The attention_mask check holds both ways on the toy model: a padding mask raises a ValueError naming
    attention_mask (what supports_attention_mask=False demands), and an all-ones mask changes nothing."""
    model = build_toy()
    ids = _toy_ids(seq=9)
    check_attention_mask_capability(model, {"input_ids": ids}, supports_attention_mask=False)
    check_attention_mask_capability(model, {"input_ids": ids}, supports_attention_mask=True)  # all ones accepted
