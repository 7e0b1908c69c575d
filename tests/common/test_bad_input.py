"""Battery: bad input raises a ValueError that names the argument and the offending value, dtype or shape (never an
error from inside torch, never a silent change of the outputs). The checks are grouped by the spec's `input_kind`
("tokens": input_ids, attention_mask, position_ids and token labels; "pixels": pixel_values and class labels;
"features": input_features; "series": past_values and future_values), so a new architecture of an existing kind gets
all of them. The features and series groups are also run on tests/toy_value_models.py, where a variant that does not
validate shows that they fail."""

import importlib
import json
import logging
import re

import numpy as np
import pytest
import torch
from conftest import skip_if_listed
from torch.overrides import TorchFunctionMode
from transformers import AutoModelForImageClassification

from hf_models.data import image_processor_for


def _model(spec, kind):
    if spec.input_kind != kind:
        pytest.skip(f"{spec.name}: the {kind} checks apply to models that read {kind} (its kind: {spec.input_kind})")
    return spec.build().eval()


def _token_model(spec):
    return _model(spec, "tokens")


def _pixel_model(spec):
    return _model(spec, "pixels")


def _ids(spec, model, batch=2, seq=8):
    return spec.make_inputs(model.config, batch=batch, seq=seq)["input_ids"]


def _main(spec, model, **inputs):
    with torch.no_grad():
        return model(**inputs)[spec.output_key]


# ------------------------------------------------------------------------------------------------------ tokens
def test_wrong_rank(spec):
    model = _token_model(spec)
    ids = _ids(spec, model)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, sequence\); got rank 3 \(1, 2, 8\)"):
        model(ids[None])
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, sequence\); got rank 1 \(8,\)"):
        model(ids[0])


def test_ids_that_are_not_a_tensor(spec):
    model = _token_model(spec)
    ids = _ids(spec, model)
    with pytest.raises(ValueError, match="input_ids must be a torch.Tensor; got list"):
        model(ids.tolist())
    with pytest.raises(ValueError, match="input_ids must be a torch.Tensor; got numpy.ndarray"):
        model(ids.numpy())


def test_ids_of_a_wrong_dtype(spec):
    model = _token_model(spec)
    ids = _ids(spec, model)
    for dtype in (torch.float32, torch.float64, torch.bool):
        with pytest.raises(ValueError, match=rf"input_ids must be integer token ids .*got dtype {dtype}"):
            model(ids.to(dtype))
    # narrower integer ids are token ids too: the same outputs as int64
    expected = _main(spec, model, input_ids=ids)
    small = ids.clamp(max=255)
    expected_small = _main(spec, model, input_ids=small)
    assert torch.equal(_main(spec, model, input_ids=ids.to(torch.int32)), expected)
    assert torch.equal(_main(spec, model, input_ids=small.to(torch.uint8)), expected_small)


def test_empty_batch_and_empty_sequence(spec):
    model = _token_model(spec)
    ids = _ids(spec, model)
    with pytest.raises(ValueError, match=r"input_ids is empty \(batch size 0\): shape \(0, 8\)"):
        model(ids[:0])
    with pytest.raises(ValueError, match=r"input_ids is empty \(sequence length 0\): shape \(2, 0\)"):
        model(ids[:, :0])


def test_ids_outside_the_vocabulary(spec):
    model = _token_model(spec)
    vocab = model.config.vocab_size
    ids = _ids(spec, model)
    ids[0, 3] = vocab
    with pytest.raises(
        ValueError, match=rf"input_ids must be in \[0, vocab_size={vocab}\); got values in \[\d+, {vocab}\]"
    ):
        model(ids)
    ids[0, 3] = -1
    with pytest.raises(ValueError, match=rf"vocab_size={vocab}\); got values in \[-1, "):
        model(ids)


def test_too_long(spec):
    model = _token_model(spec)
    limit = model.config.max_position_embeddings
    ids = torch.ones(1, limit + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"too long: position {limit} is beyond max_position_embeddings={limit}"):
        model(ids)
    model(ids[:, :limit])  # the limit itself is fine
    if spec.can_generate:
        prompt = ids[:, : limit - 2]
        with pytest.raises(ValueError, match="too long"):
            model.generate(prompt, max_new_tokens=5, do_sample=False)


def test_bad_position_ids(spec):
    model = _token_model(spec)
    limit = model.config.max_position_embeddings
    ids = _ids(spec, model)
    positions = torch.arange(8)[None].expand(2, -1)
    # explicit positions equal to the default ones give the default outputs, in every accepted shape
    expected = _main(spec, model, input_ids=ids)
    for given in (positions, positions[:1], positions[0], positions.to(torch.int32)):
        assert torch.equal(_main(spec, model, input_ids=ids, position_ids=given), expected)
    with pytest.raises(ValueError, match=r"position_ids must be integer positions .*got dtype torch.float32"):
        model(ids, position_ids=positions.float())
    with pytest.raises(ValueError, match=r"position_ids must be >= 0; got a minimum of -3"):
        model(ids, position_ids=positions - 3)
    with pytest.raises(ValueError, match=rf"position_ids must be < max_position_embeddings={limit}; got a maximum of"):
        model(ids, position_ids=positions + limit)
    with pytest.raises(ValueError, match=r"position_ids must have shape \(batch, 8\) = \(2, 8\).*; got \(3, 8\)"):
        model(ids, position_ids=torch.arange(8)[None].expand(3, -1))
    with pytest.raises(ValueError, match=r"position_ids must have shape .*; got \(2, 7\)"):
        model(ids, position_ids=positions[:, :7])
    with pytest.raises(ValueError, match="position_ids must be a torch.Tensor; got list"):
        model(ids, position_ids=positions.tolist())
    with pytest.raises(ValueError, match="position_ids is on meta but input_ids on cpu"):
        model(ids, position_ids=positions.to("meta"))


def test_attention_mask_shape_mismatch(spec):
    model = _token_model(spec)
    ids = _ids(spec, model)
    with pytest.raises(ValueError, match=r"attention_mask must be a 2-D padding mask .*= \(2, 8\); got \(2, 7\)"):
        model(ids, attention_mask=torch.ones(2, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must be a 2-D padding mask .*; got \(2, 1, 8, 8\)"):
        model(ids, attention_mask=torch.ones(2, 1, 8, 8))
    with pytest.raises(ValueError, match="attention_mask must be a torch.Tensor; got list"):
        model(ids, attention_mask=[[1] * 8] * 2)
    with pytest.raises(ValueError, match="attention_mask is on meta but input_ids on cpu"):
        model(ids, attention_mask=torch.ones(2, 8, dtype=torch.long, device="meta"))


def test_attention_mask_values_other_than_0_and_1(spec):
    """A 0/1 padding mask in any dtype gives the same outputs; anything else (an additive 0/-inf mask, 0.5, 2, a row
    of padding only) is refused instead of silently changing the outputs."""
    if not spec.supports_attention_mask:
        skip_if_listed(spec, "attention_mask")
    model = _token_model(spec)
    ids = _ids(spec, model)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :3] = 0  # a left-padded first row
    expected = _main(spec, model, input_ids=ids, attention_mask=mask)
    for same in (mask.bool(), mask.float(), mask.to(torch.bfloat16), mask.to(torch.int32)):
        assert torch.equal(_main(spec, model, input_ids=ids, attention_mask=same), expected), same.dtype
    # a mask of all ones is no mask at all
    assert torch.equal(
        _main(spec, model, input_ids=ids, attention_mask=torch.ones_like(mask)), _main(spec, model, input_ids=ids)
    )
    additive = torch.zeros(2, 8).masked_fill(mask == 0, float("-inf"))
    with pytest.raises(ValueError, match=r"attention_mask must be a padding mask of 1 .*got an additive mask .*-inf"):
        model(ids, attention_mask=additive)
    with pytest.raises(ValueError, match=r"additive mask .*-10000\.0 \(dtype torch.float32\)"):
        model(ids, attention_mask=additive.clamp_min(-1e4))
    with pytest.raises(
        ValueError, match=r"attention_mask must hold only 1 .* got the value 0\.5 \(dtype torch.float32\)"
    ):
        model(ids, attention_mask=mask.float() * 0.5 + 0.5)
    with pytest.raises(ValueError, match=r"got the value 2 \(dtype torch.int64\)"):
        model(ids, attention_mask=mask * 2)
    with pytest.raises(ValueError, match=r"got the value nan"):
        model(ids, attention_mask=mask.float().masked_fill(mask == 0, float("nan")))
    # the additive mask that masks nothing (all 0) is a mask of padding only
    with pytest.raises(ValueError, match=r"attention_mask row 0 is all 0"):
        model(ids, attention_mask=torch.zeros(2, 8))
    one_empty = mask.clone()
    one_empty[1] = 0
    with pytest.raises(ValueError, match=r"attention_mask row 1 is all 0"):
        model(ids, attention_mask=one_empty)


def test_inputs_embeds(spec):
    model = _token_model(spec)
    width = model.config.hidden_size
    if spec.supports_inputs_embeds:
        with pytest.raises(ValueError, match=rf"inputs_embeds .*hidden_size={width}"):
            model(inputs_embeds=torch.randn(2, 8, width + 1))
    else:
        with pytest.raises(ValueError, match="inputs_embeds is not supported"):
            model(inputs_embeds=torch.randn(2, 8, width))


def test_token_labels(spec):
    model = _token_model(spec)
    if not spec.has_loss:
        skip_if_listed(spec, "labels")
    vocab = model.config.vocab_size
    ids = _ids(spec, model)
    for dtype in (torch.float32, torch.bool):
        with pytest.raises(ValueError, match=rf"labels must be integer token ids or -100 .*got dtype {dtype}"):
            model(ids, labels=ids.to(dtype))
    with pytest.raises(ValueError, match="labels must be a torch.Tensor; got list"):
        model(ids, labels=ids.tolist())
    labels = ids.clone()
    labels[1, 4] = vocab
    with pytest.raises(
        ValueError, match=rf"labels must be token ids in \[0, vocab_size={vocab}\) or -100 .*got {vocab}"
    ):
        model(ids, labels=labels)
    labels[1, 4] = -5
    with pytest.raises(ValueError, match=r"labels must be token ids in .*; got -5"):
        model(ids, labels=labels)
    # -100 is ignored, and integer labels of any width give the int64 loss
    labels[1, 4] = -100
    with torch.no_grad():
        loss = model(ids, labels=labels).loss
        assert torch.isfinite(loss)
        assert torch.equal(model(ids, labels=labels.to(torch.int32)).loss, loss)


def test_labels_shape_mismatch(spec):
    model = spec.build().eval()
    if not spec.has_loss:
        skip_if_listed(spec, "labels")
    if spec.input_kind == "series":
        pytest.skip(f"{spec.name}: a forecaster's labels are future_values, whose shapes test_series_inputs checks")
    inputs = spec.make_inputs(model.config, batch=2, seq=8)
    labels = inputs.pop("labels")
    expected = re.escape(f"got {tuple(labels[:, :5].shape if labels.dim() == 2 else labels[:1].shape)}")
    with pytest.raises(ValueError, match=rf"labels must have .*shape.*{expected}"):
        model(**inputs, labels=labels[:, :5] if labels.dim() == 2 else labels[:1])


def test_unused_arguments_are_never_ignored_silently(spec, caplog):
    """A keyword the model does not use warns (once per set of names); labels given to a backbone are refused."""
    model = spec.build().eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=8)
    unused = f"unused_argument_{spec.name.replace('-', '_')}"
    with caplog.at_level(logging.WARNING):
        model(**inputs, **{unused: 1})
    assert f"ignores the arguments ['{unused}']" in caplog.text
    if not spec.has_loss:
        with pytest.raises(ValueError, match=r"labels given to \w+, a backbone without a head"):
            model(**inputs, labels=inputs[next(iter(inputs))])


class _HostReads(TorchFunctionMode):
    """Counts the tensor-to-Python conversions (each one a host sync on an accelerator)."""

    NAMES = {"tolist", "item", "__bool__", "__int__", "__index__", "__float__"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.NAMES
        return func(*args, **(kwargs or {}))


def test_token_checks_read_the_host_once(spec):
    """Every value check of the token inputs (ids, mask, positions) shares one host read, and the labels one more:
    on a GPU each read is a sync on the hot path of training and of every decoding step."""
    model = _token_model(spec)
    try:
        checks = importlib.import_module(f"hf_models.{spec.package}.shared_token_inputs")
    except ImportError:
        pytest.skip(f"{spec.name}: validates its inputs without the shared block (no count to check)")
    config = model.config
    ids = _ids(spec, model, seq=16)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    for attention_mask, position_ids in ((None, None), (mask, None), (mask, torch.arange(16)[None])):
        with _HostReads() as reads:
            checks.validate_token_inputs(
                config.vocab_size, config.max_position_embeddings, ids, attention_mask, position_ids, 0
            )
        assert reads.count == 1, (attention_mask is not None, position_ids is not None, reads.count)
    with _HostReads() as reads:
        checks.check_labels(ids, ids, config.vocab_size)
    assert reads.count == 1


# ------------------------------------------------------------------------------------------------------ pixels
def test_image_wrong_rank_channels_size_and_nan(spec):
    model = _pixel_model(spec)
    config = model.config
    pixels = spec.make_inputs(config, batch=2)["pixel_values"]
    with pytest.raises(
        ValueError, match=r"pixel_values must have shape \(batch, channels, height, width\); got rank 3"
    ):
        model(pixel_values=pixels[0])
    with pytest.raises(ValueError, match=rf"pixel_values has {2 * config.num_channels} channels; .*num_channels="):
        model(pixel_values=torch.cat([pixels, pixels], dim=1))
    size = config.image_size
    with pytest.raises(ValueError, match=rf"{size}x{size} \(config.image_size={size}\); got {size - 1}x{size - 1}"):
        model(pixel_values=pixels[..., :-1, :-1])
    for dtype in (torch.int64, torch.uint8, torch.bool):
        with pytest.raises(ValueError, match=rf"pixel_values must be a float tensor .*got dtype {dtype}"):
            model(pixel_values=pixels.to(dtype))
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = pixels.clone()
        broken[1, 0, 2, 3] = bad
        with pytest.raises(ValueError, match="pixel_values contains NaN or infinite values"):
            model(pixel_values=broken)


def test_image_not_a_tensor_and_empty_batch(spec):
    model = _pixel_model(spec)
    pixels = spec.make_inputs(model.config, batch=2)["pixel_values"]
    with pytest.raises(ValueError, match="pixel_values must be a torch.Tensor; got numpy.ndarray"):
        model(pixel_values=pixels.numpy())
    with pytest.raises(ValueError, match=r"pixel_values is empty \(batch size 0\)"):
        model(pixel_values=pixels[:0])
    with pytest.raises(ValueError, match=r"pixel_values is empty \(batch size 0\)"):
        model(pixel_values=pixels[:0], labels=torch.zeros(0, dtype=torch.long))


def test_image_float_dtypes_are_converted_to_the_model_dtype(spec):
    """float64 (numpy's default), float16 and bfloat16 pixels give exactly the outputs of float32 pixels of the same
    values; a bfloat16 model takes float32 pixels."""
    model = _pixel_model(spec)
    pixels = spec.make_inputs(model.config, batch=2)["pixel_values"]
    expected = _main(spec, model, pixel_values=pixels)
    assert torch.equal(_main(spec, model, pixel_values=pixels.double()), expected)
    assert torch.equal(_main(spec, model, pixel_values=torch.from_numpy(pixels.numpy().astype(np.float64))), expected)
    for dtype in (torch.float16, torch.bfloat16):
        rounded = pixels.to(dtype)
        assert torch.equal(_main(spec, model, pixel_values=rounded), _main(spec, model, pixel_values=rounded.float()))
    model.to(torch.bfloat16)
    out = _main(spec, model, pixel_values=pixels)
    assert out.dtype == torch.bfloat16 and torch.equal(out, _main(spec, model, pixel_values=pixels.bfloat16()))


def test_image_labels(spec):
    model = _pixel_model(spec)
    classes = model.config.num_labels
    pixels = spec.make_inputs(model.config, batch=2)["pixel_values"]
    with pytest.raises(
        ValueError, match=rf"labels must be class ids in \[0, num_labels={classes}\); got values in \[0, {classes}\]"
    ):
        model(pixel_values=pixels, labels=torch.tensor([0, classes]))
    with pytest.raises(ValueError, match=rf"num_labels={classes}\); got values in \[-1, 1\]"):
        model(pixel_values=pixels, labels=torch.tensor([-1, 1]))
    for dtype in (torch.float32, torch.bool):
        with pytest.raises(ValueError, match=rf"labels must be integer class ids .*got dtype {dtype}"):
            model(pixel_values=pixels, labels=torch.tensor([0, 1]).to(dtype))
    with pytest.raises(ValueError, match=r"labels must have shape \(batch,\) = \(2,\); got \(2, 1\)"):
        model(pixel_values=pixels, labels=torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="labels must be a torch.Tensor; got list"):
        model(pixel_values=pixels, labels=[0, 1])
    with torch.no_grad():  # any integer dtype: the int64 loss
        loss = model(pixel_values=pixels, labels=torch.tensor([0, 1])).loss
        assert torch.equal(model(pixel_values=pixels, labels=torch.tensor([0, 1], dtype=torch.uint8)).loss, loss)


def test_image_size_edited_in_config_json_is_refused_by_name(spec, tmp_path):
    """config.json's image_size edited without the image processor: the weights still load (nothing in them depends
    on the size), so the forward is where the mismatch shows, naming config.image_size and the processor."""
    model = _pixel_model(spec)
    config = model.config
    model.save_pretrained(tmp_path)
    processor = image_processor_for(config)
    processor.save_pretrained(tmp_path)
    edited = json.loads((tmp_path / "config.json").read_text())
    edited["image_size"] = config.image_size + config.patch_size * 2
    (tmp_path / "config.json").write_text(json.dumps(edited))
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    images = [np.zeros((config.image_size, config.image_size, 3), dtype=np.uint8)] * 2
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    new = edited["image_size"]
    message = (
        rf"must be {new}x{new} \(config.image_size={new}\); got {config.image_size}x{config.image_size}.*processor"
    )
    with pytest.raises(ValueError, match=message):
        loaded(pixel_values=pixels)
    model(pixel_values=pixels)  # the processor matches the unedited model


# ------------------------------------------------------------------------------------------------------ features
def check_feature_inputs(model, inputs, output_key, width_field="n_dims"):
    """`input_features` (batch, length, features): a non-tensor, a wrong rank, an integer or bool dtype, a wrong
    feature width, an empty batch or prompt and NaN/inf are refused by name; float64/float16/bfloat16 features give
    the outputs of the same values in float32."""
    features = inputs["input_features"]
    others = {k: v for k, v in inputs.items() if k not in ("input_features", "labels")}
    width = getattr(model.config, width_field)

    def run(value):
        with torch.no_grad():
            return model(input_features=value, **others)[output_key]

    with pytest.raises(ValueError, match=r"input_features must be a torch.Tensor .*; got list"):
        run(features.tolist())
    with pytest.raises(ValueError, match=r"input_features must be a torch.Tensor .*; got numpy.ndarray"):
        run(features.numpy())
    with pytest.raises(ValueError, match=rf"input_features must have shape \(batch, length.*, features={width}\); "
                                         r"got rank 2"):  # fmt: skip
        run(features[0])
    for dtype in (torch.int64, torch.bool):
        with pytest.raises(ValueError, match=rf"input_features must be a float tensor .*got dtype {dtype}"):
            run(features.to(dtype))
    wider = torch.cat([features, features[..., :1]], dim=-1)
    with pytest.raises(
        ValueError, match=rf"input_features must have {width} along features \({width_field}={width}\)"
    ):
        run(wider)
    with pytest.raises(ValueError, match=r"input_features is empty \(batch 0\)"):
        run(features[:0])
    for bad in (float("nan"), float("inf")):
        broken = features.clone()
        broken[-1, 0, -1] = bad
        with pytest.raises(ValueError, match="input_features contains NaN or infinite values"):
            run(broken)
    expected = run(features)
    assert torch.equal(run(features.double()), expected)
    rounded = features.to(torch.bfloat16)
    assert torch.equal(run(rounded), run(rounded.float()))


def test_feature_inputs(spec):
    model = _model(spec, "features")
    check_feature_inputs(model, spec.make_inputs(model.config, batch=2), spec.output_key, spec.feature_width_field)


# ------------------------------------------------------------------------------------------------------ series
def check_series_inputs(model, inputs, output_key):
    """`past_values` (batch, context_length, channels) and `future_values` (batch, prediction_length, channels), the
    names and config fields of transformers' time-series models: wrong rank, channels, lengths or batch, integer
    dtypes, non-tensors, empty batches and NaN/inf are refused by name; float64 values give the float32 outputs."""
    config = model.config
    past, future = inputs["past_values"], inputs["future_values"]
    others = {k: v for k, v in inputs.items() if k not in ("past_values", "future_values")}

    def run(past_values, future_values=None, key=output_key):
        with torch.no_grad():
            return model(past_values=past_values, future_values=future_values, **others)[key]

    with pytest.raises(ValueError, match=r"past_values must be a torch.Tensor .*; got numpy.ndarray"):
        run(past.numpy())
    with pytest.raises(ValueError, match=r"past_values must have shape \(batch, time=\d+, channels=\d+\); got rank 2"):
        run(past[0])
    with pytest.raises(ValueError, match=r"past_values must be a float tensor .*got dtype torch.int64"):
        run(past.long())
    channels, context = config.num_input_channels, config.context_length
    with pytest.raises(ValueError, match=rf"past_values must have {channels} along channels \(num_input_channels="):
        run(torch.cat([past, past[..., :1]], dim=-1))
    with pytest.raises(ValueError, match=rf"past_values must have {context} along time \(context_length={context}\)"):
        run(past[:, 1:])
    with pytest.raises(ValueError, match=r"past_values is empty \(batch 0\)"):
        run(past[:0])
    broken = past.clone()
    broken[0, -1, 0] = float("nan")
    with pytest.raises(ValueError, match="past_values contains NaN or infinite values"):
        run(broken)
    horizon = config.prediction_length
    with pytest.raises(ValueError, match=rf"future_values must have {horizon} along time \(prediction_length="):
        run(past, future[:, 1:], key="loss")
    with pytest.raises(ValueError, match=r"future_values must have 2 along batch"):
        run(past, future[:1], key="loss")
    with pytest.raises(ValueError, match=r"future_values must be a torch.Tensor .*; got list"):
        run(past, future.tolist(), key="loss")
    broken = future.clone()
    broken[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="future_values contains NaN or infinite values"):
        run(past, broken, key="loss")
    assert torch.equal(run(past.double()), run(past))
    assert torch.equal(run(past.double(), future.double(), key="loss"), run(past, future, key="loss"))


def test_series_inputs(spec):
    model = _model(spec, "series")
    check_series_inputs(model, spec.make_inputs(model.config, batch=2), spec.output_key)


# The toy value models (tests/toy_value_models.py) prove both groups before a real model of these kinds exists.
def test_toy_feature_and_series_checks_pass():
    from toy_value_models import ToyForecaster, ToyPromptClassifier, build_toy_values, feature_inputs, series_inputs

    model = build_toy_values(ToyPromptClassifier)
    check_feature_inputs(model, feature_inputs(model.config), "logits")
    model = build_toy_values(ToyForecaster)
    check_series_inputs(model, series_inputs(model.config), "prediction_outputs")


def test_toy_feature_and_series_checks_fail_without_validation():
    """A model that skips validation fails both groups: the checks can fail."""
    from toy_value_models import ToyForecaster, ToyPromptClassifier, build_toy_values, feature_inputs, series_inputs

    model = build_toy_values(ToyPromptClassifier, validate=False)
    with pytest.raises((pytest.fail.Exception, AssertionError, AttributeError, TypeError, RuntimeError)):
        check_feature_inputs(model, feature_inputs(model.config), "logits")
    model = build_toy_values(ToyForecaster, validate=False)
    with pytest.raises((pytest.fail.Exception, AssertionError, AttributeError, TypeError, RuntimeError)):
        check_series_inputs(model, series_inputs(model.config), "prediction_outputs")
