"""`hf-models train` / `evaluate` end to end on the tiny config (seconds on CPU)."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from hf_models.cli import main
from hf_models.hub import audit_folder, run_isolated
from hf_models.training.arguments import parse_train_args
from hf_models.training.run import generate_sample, load_model_config, task_of_run, train


ROOT = Path(__file__).resolve().parents[2]
TINY = "configs/train/ngt_tinyshakespeare_tiny.yaml"


@pytest.fixture
def shared(shared_data):
    return shared_data


def _train(tmp_path, *extra):
    return main(["train", TINY, "--output_dir", str(tmp_path), *extra])


def test_train_writes_a_loadable_model_with_results(tmp_path, shared):
    assert _train(tmp_path, "--max_steps", "12", "--learning_rate", "1e-2") == 0
    run_config = yaml.safe_load((tmp_path / "train_config.yaml").read_text())
    assert run_config["training"]["max_steps"] == 12 and run_config["training"]["learning_rate"] == 1e-2  # CLI wins
    assert run_config["data"]["block_size"] == 32  # from the YAML
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["global_step"] == 12
    assert math.isclose(results["perplexity"], math.exp(results["eval_loss"]), rel_tol=1e-9)
    # characters: one token per character, so bits per character = loss / ln 2
    assert math.isclose(results["bits_per_character"], results["eval_loss"] / math.log(2), rel_tol=1e-6)
    assert (tmp_path / "checkpoint-10").is_dir() and (tmp_path / "tokenizer.json").exists()
    assert not audit_folder(tmp_path, ("AutoModel", "AutoModelForCausalLM"))
    # a generated sample is logged at the end of training; the same model and seed give it again
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples[-1]["step"] == 12 and samples[-1]["prompt"] == "\n"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert samples[-1]["text"].startswith("\n")
    assert 1 < len(tokenizer(samples[-1]["text"])["input_ids"]) <= 1 + 24  # prompt + sample_max_new_tokens (YAML)
    assert generate_sample(model, tokenizer, "\n", 24) == samples[-1]["text"]
    ids = torch.tensor([[5, 6, 7, 8]])
    outputs, info = run_isolated(tmp_path, "AutoModelForCausalLM", {"input_ids": ids}, max_new_tokens=4)
    assert info["hf_models_modules"] == [] and outputs["generated"].shape == (1, 8)

    # evaluate reproduces the numbers written at the end of training
    (tmp_path / "eval_results.json").unlink()
    assert main(["evaluate", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "eval_results.json").read_text())
    assert math.isclose(again["eval_loss"], results["eval_loss"], rel_tol=1e-5)


def test_fresh_run_refuses_a_used_output_dir(tmp_path, shared, capsys):
    assert _train(tmp_path, "--max_steps", "2", "--save_steps", "2") == 0
    weights = (tmp_path / "model.safetensors").read_bytes()
    assert _train(tmp_path, "--max_steps", "4") == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "model.safetensors").read_bytes() == weights


class _Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 13:
            raise KeyboardInterrupt("simulated kill after checkpoint-10")


def _losses(folder):
    state = json.loads((folder / "trainer_state.json").read_text())
    return {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}


def test_resume_after_a_kill_continues_the_same_run(tmp_path, shared):
    overrides = ["--max_steps", "20", "--save_steps", "10", "--logging_steps", "5", "--dataloader_num_workers", "0"]
    reference = tmp_path / "reference"
    assert _train(reference, *overrides) == 0

    killed = tmp_path / "killed"
    args = parse_train_args(TINY, ["--output_dir", str(killed), *overrides])
    with pytest.raises(KeyboardInterrupt):
        train(*args, callbacks=[_Crash()])
    assert (killed / "checkpoint-10").is_dir() and not (killed / "checkpoint-20").exists()
    assert main(["train", TINY, "--resume", "--output_dir", str(killed), *overrides]) == 0

    resumed, expected = _losses(killed), _losses(reference)
    assert sorted(resumed) == [5, 10, 15, 20]  # no gap, no repeated steps
    for step in expected:
        assert math.isclose(resumed[step], expected[step], rel_tol=1e-4), (step, resumed[step], expected[step])
    assert json.loads((killed / "eval_results.json").read_text())["global_step"] == 20


def test_resume_without_checkpoint_and_bad_configs_fail_clearly(tmp_path, shared, capsys):
    assert main(["train", TINY, "--resume", "--output_dir", str(tmp_path / "none")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  config: configs/models/ngt/tiny.json\n  colour: blue\n")
    assert main(["train", str(bad)]) == 2
    assert "model.colour" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"model": {"config": "configs/models/ngt/tiny.json", "overrides": {"hidden_size": 30}},
                                   "data": {"corpus": "../shared/data/tinyshakespeare.txt", "block_size": 16},
                                   "training": {"output_dir": str(tmp_path / "x"), "max_steps": 1}}))  # fmt: skip
    assert main(["train", str(bad)]) == 2
    assert "hidden_size=30" in capsys.readouterr().err
    assert main(["train", TINY, "--output_dir", str(tmp_path / "y"), "--sample_max_new_tokens", "-1"]) == 2
    assert "sample_max_new_tokens=-1" in capsys.readouterr().err
    image = "configs/train/mhc_mnist_tiny.yaml"
    assert main(["train", image, "--output_dir", str(tmp_path / "z"), "--random_shift", "-1"]) == 2
    assert "random_shift=-1" in capsys.readouterr().err
    # a field of another task's data section is not one of this run's
    assert main(["train", TINY, "--output_dir", str(tmp_path / "z"), "--random_shift", "1"]) == 2
    assert "--random_shift" in capsys.readouterr().err and not (tmp_path / "z").exists()


def test_bpe_tokenizer_run(tmp_path, shared):
    assert _train(tmp_path, "--max_steps", "3", "--tokenizer", "bpe", "--bpe_vocab_size", "300") == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["eval_characters"] > results["eval_tokens"]  # BPE merges characters
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vocab_size"] == 300


def test_stock_baseline_trains_through_the_same_command(tmp_path, shared):
    """The comparison baseline is a stock transformers model (Llama) trained by the same pipeline."""
    config = "configs/train/llama_tinyshakespeare_baby.yaml"
    overrides = ["--output_dir", str(tmp_path), "--max_steps", "2", "--eval_strategy", "no", "--max_eval_blocks", "4"]
    assert main(["train", config, *overrides]) == 0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "llama" and saved["vocab_size"] == 66
    assert json.loads((tmp_path / "eval_results.json").read_text())["global_step"] == 2


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs" / "train").glob("*.yaml")))
def test_every_shipped_train_config_parses_and_builds_its_model_config(config, tmp_path):
    """The recipes in configs/train/ are documentation people copy: each parses, names an existing model config and
    only overrides fields that config has."""
    model_args, data_args, training_args = parse_train_args(
        ROOT / "configs" / "train" / config, ["--output_dir", str(tmp_path)]
    )
    model_config = load_model_config(model_args)
    for key, value in json.loads(model_args.model_overrides).items():
        assert getattr(model_config, key) == value
    assert training_args.output_dir == str(tmp_path)
    # the run's task is the one its model config names, and its data section is that task's
    task = task_of_run(model_args)
    assert isinstance(data_args, task.data_arguments)
    expected = {"mnist": "image_classification", "table": "prompt_classification", "etth1": "forecasting",
                "drift": "forecasting"}  # fmt: skip
    assert task.name == next((name for key, name in expected.items() if key in config), "causal_lm")
