"""Battery: configuration round-trips and validation."""

import json

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
