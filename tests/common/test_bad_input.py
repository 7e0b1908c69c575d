"""Battery: bad input raises a ValueError that names the problem (never a stack trace from inside torch)."""

import pytest
import torch
from conftest import skip_if_listed


def _text_model(spec):
    if spec.modality != "text":
        pytest.skip(f"{spec.name}: token-input checks apply to text models (image checks below)")
    return spec.build().eval()


def _image_model(spec):
    if spec.modality != "image":
        pytest.skip(f"{spec.name}: image-input checks apply to image models (token checks above)")
    return spec.build().eval()


def test_wrong_rank(spec):
    model = _text_model(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    with pytest.raises(ValueError, match="input_ids must have shape"):
        model(ids[None])
    with pytest.raises(ValueError, match="input_ids must have shape"):
        model(ids[0])


def test_ids_outside_the_vocabulary(spec):
    model = _text_model(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    ids[0, 3] = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"vocab_size={model.config.vocab_size}"):
        model(ids)
    ids[0, 3] = -1
    with pytest.raises(ValueError, match="vocab_size"):
        model(ids)


def test_float_ids(spec):
    model = _text_model(spec)
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.rand(2, 8))


def test_too_long(spec):
    model = _text_model(spec)
    limit = model.config.max_position_embeddings
    ids = torch.ones(1, limit + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="too long"):
        model(ids)
    model(ids[:, :limit])  # the limit itself is fine
    if spec.can_generate:
        prompt = ids[:, : limit - 2]
        with pytest.raises(ValueError, match="too long"):
            model.generate(prompt, max_new_tokens=5, do_sample=False)


def test_attention_mask_shape_mismatch(spec):
    model = _text_model(spec)
    ids = spec.make_inputs(model.config, batch=2, seq=8)["input_ids"]
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 1, 8, 8))


def test_labels_shape_mismatch(spec):
    model = spec.build().eval()
    if not spec.has_loss:
        skip_if_listed(spec, "labels")
    inputs = spec.make_inputs(model.config, batch=2, seq=8)
    labels = inputs.pop("labels")
    with pytest.raises(ValueError, match="labels"):
        model(**inputs, labels=labels[:, :5] if labels.dim() == 2 else labels[:1])


def test_image_wrong_rank_channels_size_and_nan(spec):
    model = _image_model(spec)
    config = model.config
    pixels = spec.make_inputs(config, batch=2)["pixel_values"]
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model(pixel_values=pixels[0])
    with pytest.raises(ValueError, match=f"num_channels={config.num_channels}"):
        model(pixel_values=torch.cat([pixels, pixels], dim=1))
    with pytest.raises(ValueError, match=f"{config.image_size}x{config.image_size}"):
        model(pixel_values=pixels[..., :-1, :-1])
    with pytest.raises(ValueError, match="float"):
        model(pixel_values=pixels.long())
    pixels[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(pixel_values=pixels)


def test_image_labels_outside_the_classes(spec):
    model = _image_model(spec)
    inputs = spec.make_inputs(model.config, batch=2)
    with pytest.raises(ValueError, match=f"num_labels={model.config.num_labels}"):
        model(pixel_values=inputs["pixel_values"], labels=torch.tensor([0, model.config.num_labels]))
