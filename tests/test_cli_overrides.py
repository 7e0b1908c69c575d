"""`hf-models train CONFIG --<field> VALUE`: fields of the model config set from the command line, merged with the
YAML's `model.overrides`; `--model_overrides` merges the same way; unknown names are refused by name."""

import json

import pytest
import yaml

from hf_models.cli import main
from hf_models.training.arguments import parse_train_args


SMALL = "configs/train/ngt_tinyshakespeare_small.yaml"  # overrides: attractive kernel with a self score
IMAGE = "configs/train/mhc_mnist_tiny.yaml"  # overrides: image_size, patch_size, pool_size, mask_ratio


def _overrides(config, *cli):
    model_args, _, _ = parse_train_args(config, list(cli))
    return json.loads(model_args.model_overrides)


def test_a_model_config_field_merges_with_the_yaml_overrides():
    yaml_overrides = yaml.safe_load(open(SMALL))["model"]["overrides"]
    assert _overrides(SMALL) == yaml_overrides
    assert _overrides(SMALL, "--radius_cutoff", "soft") == {**yaml_overrides, "radius_cutoff": "soft"}
    # `--name=VALUE`, values read as YAML (a number, a bool), the command line winning over the file
    merged = _overrides(SMALL, "--initial_radius=2.5", "--self_attention", "false", "--max_steps", "7")
    assert merged == {**yaml_overrides, "initial_radius": 2.5, "self_attention": False}


def test_model_overrides_json_merges_instead_of_replacing():
    yaml_overrides = yaml.safe_load(open(IMAGE))["model"]["overrides"]
    merged = _overrides(IMAGE, "--model_overrides", '{"mask_ratio": 0.5}', "--hidden_dropout", "0.1")
    assert merged == {**yaml_overrides, "mask_ratio": 0.5, "hidden_dropout": 0.1}


def test_section_fields_still_go_to_their_sections():
    _, data_args, training_args = parse_train_args(SMALL, ["--block_size", "64", "--learning_rate", "0.01"])
    assert data_args.block_size == 64 and training_args.learning_rate == 0.01


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        (["--radius_cutof", "soft"], "unknown field(s) --radius_cutof"),
        (["--radius_cutoff"], "--radius_cutoff needs a value"),
        (["--model_overrides", "[1, 2]"], "--model_overrides must be a JSON object"),
        (["--model_overrides", "{bad"], "--model_overrides must be a JSON object"),
        (["--image_size", "28"], "unknown field(s) --image_size"),  # an mHC field, not an NGT one
    ],
)
def test_bad_overrides_are_refused_by_name(cli, message):
    with pytest.raises(ValueError) as error:
        parse_train_args(SMALL, cli)
    assert message in str(error.value)
    assert "NgtConfig" in str(error.value) or "needs a value" in message or "JSON" in message


def test_an_invalid_value_for_a_known_field_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", SMALL, "--radius_cutoff", "maybe", "--output_dir", str(out), "--max_steps", "1"])
    assert code == 2
    assert "radius_cutoff" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_trains_with_the_command_line_field(tmp_path):
    out = tmp_path / "run"
    tiny = "configs/train/ngt_tinyshakespeare_tiny.yaml"
    cli = ["train", tiny, "--radius_cutoff", "soft", "--output_dir", str(out), "--max_steps", "2", "--save_steps", "2",
           "--sample_max_new_tokens", "0", "--max_eval_blocks", "2"]  # fmt: skip
    assert main(cli) == 0
    assert json.loads((out / "config.json").read_text())["radius_cutoff"] == "soft"
    assert yaml.safe_load((out / "train_config.yaml").read_text())["model"]["overrides"]["radius_cutoff"] == "soft"


def test_yaml_inherit_merges_base_files():
    """`inherit:` starts from the named files (relative to the including file, chained), the including file winning
    and mappings merging key by key; the dense baseline is its low-rank run plus two model overrides."""
    model_args, data_args, training_args = parse_train_args("configs/train/lowrank_icl_table_v20_dense.yaml")
    assert json.loads(model_args.model_overrides) == {"position_embedding_type": "dense", "attention_pattern": "full"}
    assert model_args.model_config == "configs/models/lowrank_icl/small.json"  # from the base, two levels up
    assert data_args.num_tables == 20 and data_args.balanced is True and data_args.eval_examples == 2000
    assert training_args.output_dir == "runs/lowrank_icl_table_v20_dense" and training_args.learning_rate == 1e-4
    _, _, base_args = parse_train_args("configs/train/lowrank_icl_table_v20.yaml", ["--learning_rate", "0.002"])
    assert base_args.learning_rate == 0.002 and base_args.max_steps == 3000


def test_yaml_inherit_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(
        ValueError, match=r"a.yaml: inherit 'b.yaml' includes itself|b.yaml: inherit 'a.yaml' includes"
    ):
        parse_train_args(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("inherit: missing.yaml\n")
    with pytest.raises(ValueError, match=r"c.yaml: inherit 'missing.yaml': no such file"):
        parse_train_args(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("inherit: [1, 2]\n")
    with pytest.raises(ValueError, match=r"d.yaml: inherit must name a YAML file or a list of them"):
        parse_train_args(tmp_path / "d.yaml")
