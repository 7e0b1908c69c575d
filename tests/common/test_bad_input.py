"""Battery: bad input raises a ValueError that names the problem (never a stack trace from inside torch)."""

import pytest
import torch


def _lm_or_skip(spec):
    if not spec.can_generate:
        pytest.skip(f"{spec.name}: token-input checks apply to language models")
    return spec.build().eval()


def test_wrong_rank(spec):
    model = _lm_or_skip(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    with pytest.raises(ValueError, match="input_ids must have shape"):
        model(ids[None])
    with pytest.raises(ValueError, match="input_ids must have shape"):
        model(ids[0])


def test_ids_outside_the_vocabulary(spec):
    model = _lm_or_skip(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    ids[0, 3] = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"vocab_size={model.config.vocab_size}"):
        model(ids)
    ids[0, 3] = -1
    with pytest.raises(ValueError, match="vocab_size"):
        model(ids)


def test_float_ids(spec):
    model = _lm_or_skip(spec)
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.rand(2, 8))


def test_too_long(spec):
    model = _lm_or_skip(spec)
    limit = model.config.max_position_embeddings
    ids = torch.ones(1, limit + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="too long"):
        model(ids)
    model(ids[:, :limit])  # the limit itself is fine
    prompt = ids[:, : limit - 2]
    with pytest.raises(ValueError, match="too long"):
        model.generate(prompt, max_new_tokens=5, do_sample=False)


def test_attention_mask_shape_mismatch(spec):
    model = _lm_or_skip(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 1, 8, 8))


def test_labels_shape_mismatch(spec):
    model = _lm_or_skip(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    with pytest.raises(ValueError, match="labels"):
        model(ids, labels=ids[:, :5])
