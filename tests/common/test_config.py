"""Battery: configuration round-trips and validation."""

import json
import re

import pytest
from conftest import skip_if_listed
from transformers import AutoConfig


def test_tiny_config_loads_through_autoconfig(spec):
    config = AutoConfig.from_pretrained(str(spec.tiny_config))
    assert type(config) is spec.config_class
    assert config.model_type == f"hfm_{spec.package}"
    raw = json.loads(spec.tiny_config.read_text())
    for key, value in raw.items():
        assert getattr(config, key) == value, key


def test_dict_and_disk_round_trip(spec, tmp_path):
    config = spec.load_config()
    again = spec.config_class.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is spec.config_class
    assert loaded.to_diff_dict() == config.to_diff_dict()
    json.dumps(config.to_dict())  # every field JSON-serialisable


def test_auto_map_names_every_auto_class(spec):
    auto_map = spec.load_config().auto_map
    for auto_class in spec.all_auto_classes:
        assert auto_class in auto_map, auto_class


def test_invalid_values_raise_naming_field_and_value(spec):
    skip_if_listed(spec, "invalid_config")
    assert spec.invalid_config_values, "a spec must list invalid values to check"
    base = spec.load_config().to_dict()
    for field, value in spec.invalid_config_values.items():
        with pytest.raises(ValueError) as info:
            spec.config_class(**{**base, field: value})
        message = str(info.value)
        assert field in message and repr(value) in message, message


def test_every_float_field_refuses_nan_and_inf(spec):
    """NaN and inf pass comparisons such as `eps > 0`: every float field of the config refuses them by name."""
    base = spec.load_config().to_dict()
    floats = [field for field, value in base.items() if isinstance(value, float)]
    assert floats, "the config has float fields to check"
    for field in floats:
        for value in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(ValueError, match=rf"\.{field}={value!r} is invalid: must be a finite number"):
                spec.config_class(**{**base, field: value})


def test_unknown_activation_lists_the_valid_names(spec):
    from transformers.activations import ACT2FN

    base = spec.load_config().to_dict()
    assert base["hidden_act"] in ACT2FN
    for value in ("foo", None, 3):
        with pytest.raises(ValueError, match=rf"hidden_act={value!r} is invalid: .*'gelu'.*'silu'"):
            spec.config_class(**{**base, "hidden_act": value})
    for name in ("relu", "silu", "gelu_new"):
        assert spec.config_class(**{**base, "hidden_act": name}).hidden_act == name


def test_classifier_needs_classes(spec):
    if spec.input_kind != "pixels":
        pytest.skip(f"{spec.name}: not a classifier (num_labels applies to the image classifier)")
    base = spec.load_config().to_dict()
    for value in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=rf"num_labels={value!r} is invalid"):
            spec.config_class(**{**base, "id2label": None, "label2id": None, "num_labels": value})
    assert spec.config_class(**{**base, "id2label": None, "label2id": None, "num_labels": 1}).num_labels == 1


def test_configuration_files_import_no_torch(spec):
    """The configuration and every shared file it imports load where torch is absent (the Hub loads the config
    alone, e.g. to read the architecture)."""
    from hf_models.hub import shipped_files

    folder = spec.tiny_config.parents[3] / "hf_models" / spec.package
    names = shipped_files(folder, [f"configuration_{spec.package}.py"])
    assert f"configuration_{spec.package}.py" in names
    for name in names:
        source = (folder / name).read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import torch|from torch\b)", source, re.M), name


# transformers' own fields, which a model config passes through to PretrainedConfig and which transformers reads
TRANSFORMERS_FIELDS = {"use_cache", "tie_word_embeddings", "return_dict", "output_hidden_states", "output_attentions"}


def test_flag_and_integer_fields_refuse_other_types(spec):
    """Every true/false and every integer field the config class declares refuses a value of another type by name
    (a string "false" would otherwise read as true, a 2.5 fail deep inside torch)."""
    import inspect

    base = spec.load_config().to_dict()
    declared = inspect.signature(spec.config_class.__init__).parameters
    flags = [n for n, p in declared.items() if isinstance(p.default, bool) and n not in TRANSFORMERS_FIELDS]
    integers = [n for n, p in declared.items() if type(p.default) is int and n not in TRANSFORMERS_FIELDS]
    assert flags or integers, "the config declares fields to check"
    for field, values in [(f, ("false", 1)) for f in flags] + [(f, (2.5, "8", True)) for f in integers]:
        for value in values:
            with pytest.raises(ValueError, match=rf"\.{field}={re.escape(repr(value))} is invalid"):
                spec.config_class(**{**base, field: value})
