"""Battery: save/load through safetensors, bf16 loading, tied weights, `_init_weights` coverage."""

import torch
from conftest import skip_if_listed
from transformers import AutoModel


def _outputs(model, inputs, key):
    model.eval()
    with torch.no_grad():
        return model(**inputs)[key]


def test_save_load_gives_identical_outputs(spec, tmp_path):
    model = spec.build()
    inputs = spec.make_inputs(model.config, batch=2, seq=16)
    expected = _outputs(model, inputs, spec.output_key)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files), files
    loaded = spec.model_class.from_pretrained(tmp_path)
    assert torch.equal(_outputs(loaded, inputs, spec.output_key), expected)


def test_backbone_loads_from_a_head_checkpoint(spec, tmp_path):
    model = spec.build()
    model.save_pretrained(tmp_path)
    backbone = AutoModel.from_pretrained(tmp_path)
    head_state = model.state_dict()
    prefix = "" if type(backbone) is type(model) else f"{model.base_model_prefix}."  # a backbone spec loads itself
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, head_state[f"{prefix}{name}"]), name


def test_bf16_load_runs(spec, tmp_path):
    skip_if_listed(spec, "bf16")
    model = spec.build()
    model.save_pretrained(tmp_path)
    loaded = spec.model_class.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    inputs = spec.make_inputs(model.config, batch=2, seq=16)
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        out = loaded(**inputs)
    assert torch.isfinite(out[spec.output_key].float()).all()
    reference = _outputs(model, spec.make_inputs(model.config, batch=2, seq=16), spec.output_key)
    # bf16 keeps ~3 significant digits: the answers agree roughly, not bitwise
    torch.testing.assert_close(out[spec.output_key].float(), reference, rtol=0.1, atol=0.15)


def test_tied_weights_stay_tied(spec, tmp_path):
    if not spec.tied_weights:
        skip_if_listed(spec, "tied_weights")
        return
    model = spec.build()
    model.save_pretrained(tmp_path)
    loaded = spec.model_class.from_pretrained(tmp_path)
    params = dict(loaded.named_parameters(remove_duplicate=False))
    for target, source in spec.tied_weights.items():
        assert params[target].data_ptr() == params[source].data_ptr(), (target, source)
    with torch.no_grad():
        params[source].add_(1.0)
    assert torch.equal(params[target], params[source])


def test_init_weights_covers_every_parameter(spec):
    model = spec.build()
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    for module in model.modules():
        module._is_hf_initialized = False
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if hasattr(tensor, "_is_hf_initialized"):
                del tensor._is_hf_initialized
    model.initialize_weights()
    missed = [name for name, p in model.named_parameters() if torch.isnan(p).any()]
    assert not missed, f"_init_weights does not initialise: {missed}"
