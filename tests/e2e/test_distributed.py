"""`accelerate launch` with the files in configs/accelerate/: every file parses as an accelerate config, and the
2-process CPU data-parallel run trains for real on this machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType


ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = ROOT / "configs" / "accelerate"
EXPECTED = {
    "cpu_ddp_2proc.yaml": DistributedType.MULTI_GPU,  # the torchrun launcher; the processes run on the CPU
    "multi_gpu.yaml": DistributedType.MULTI_GPU,
    "fsdp.yaml": DistributedType.FSDP,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
}


def test_every_accelerate_file_parses():
    assert sorted(p.name for p in ACCELERATE.glob("*.yaml")) == sorted(EXPECTED)
    for name, distributed_type in EXPECTED.items():
        config = load_config_from_file(str(ACCELERATE / name))
        assert config.distributed_type == distributed_type, name
        assert config.num_processes == 2, name
    assert load_config_from_file(str(ACCELERATE / "fsdp.yaml")).fsdp_config["fsdp_auto_wrap_policy"] == (
        "TRANSFORMER_BASED_WRAP"  # wraps the model's _no_split_modules
    )


TRAIN = ["-m", "hf_models.cli", "train", "configs/train/ngt_tinyshakespeare_tiny.yaml"]
LAUNCHERS = {
    "accelerate-2proc": ["-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / "cpu_ddp_2proc.yaml")],
    "accelerate-1proc": ["-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                         "--mixed_precision", "no", "--dynamo_backend", "no"],
    "torchrun-2proc": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29512"],
}  # fmt: skip


def launch(launcher, out, *extra, native_bf16=None, train=TRAIN):
    """`hf-models train` of the tiny NGT config (or `train`) under `launcher`; the CPU taken as native-bf16 or not
    (None: as it is)."""
    command = [sys.executable, *LAUNCHERS[launcher], *train, "--output_dir", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    if native_bf16 is not None:
        env["HF_MODELS_CPU_BF16"] = "1" if native_bf16 else "0"
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("native_bf16", [True, False], ids=["native-bf16-cpu", "avx2-cpu"])
def test_two_process_cpu_ddp_run(tmp_path, shared_data, native_bf16):
    out = tmp_path / "run"
    result = launch(
        "accelerate-2proc", out, "--max_steps", "6", "--logging_steps", "3", "--save_steps", "3",
        "--max_eval_blocks", "4", native_bf16=native_bf16,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 6
    assert results["precision"] == ("bf16" if native_bf16 else "no")  # precision auto follows the CPU
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [log for log in state["log_history"] if "loss" in log]
    assert [log["step"] for log in logs] == [3, 6]
    assert state["train_batch_size"] == 8
    # the two ranks wrote one model, which loads
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).num_parameters() > 0
    assert (out / "checkpoint-6").is_dir()
    samples = (out / "samples.jsonl").read_text().splitlines()  # written once, by the main process
    assert len(samples) == 1 and json.loads(samples[0])["step"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate-1proc", "torchrun-2proc"])
def test_bf16_under_each_launcher(tmp_path, shared_data, launcher):
    """bf16 asked for explicitly runs on the CPU under every launcher (emulated where the CPU has no native bf16)."""
    out = tmp_path / "run"
    result = launch(launcher, out, "--max_steps", "2", "--save_steps", "2", "--max_eval_blocks", "2",
                    "--precision", "bf16", "--sample_max_new_tokens", "0")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["precision"] == "bf16" and results["global_step"] == 2
    assert results["world_size"] == (2 if launcher.endswith("2proc") else 1)


@pytest.mark.slow
def test_fp16_on_the_cpu_is_refused_by_every_process_before_any_work(tmp_path, shared_data):
    out = tmp_path / "run"
    result = launch("torchrun-2proc", out, "--precision", "fp16")
    assert result.returncode != 0
    assert result.stderr.count("hf-models train: training.precision=fp16 needs a CUDA GPU") == 2, result.stderr[-4000:]
    assert not out.exists()  # refused before anything was written


@pytest.mark.slow
def test_two_process_ddp_trains_the_recurrent_model_with_its_nested_groups(tmp_path, shared_data):
    """Twistor-HOPE under DDP: the level-wise parameter groups, the progress callback and the non-finite check run
    in both processes (a parameter without a gradient would stop DDP)."""
    out = tmp_path / "run"
    train = ["-m", "hf_models.cli", "train", "configs/train/twistor_hope_tinyshakespeare_tiny.yaml"]
    result = launch("accelerate-2proc", out, "--max_steps", "4", "--logging_steps", "2", "--save_steps", "4",
                    "--max_eval_blocks", "4", "--sample_max_new_tokens", "0", train=train)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 4
    state = json.loads((out / "trainer_state.json").read_text())
    assert [log["step"] for log in state["log_history"] if "loss" in log] == [2, 4]
    assert not any("skipped_nonfinite_batches" in log for log in state["log_history"])


@pytest.mark.slow
def test_two_process_ddp_trains_a_forecaster(tmp_path, shared_data):
    """The forecasting task under DDP: the window datasets shard over both processes, the validation evaluation runs
    in both, the test evaluation once."""
    out = tmp_path / "run"
    train = ["-m", "hf_models.cli", "train", "configs/train/titans_ts_etth1_tiny.yaml", "--series",
             str(shared_data / "ETTh1.csv")]  # fmt: skip
    result = launch("accelerate-2proc", out, "--max_steps", "4", "--logging_steps", "2", "--save_steps", "4",
                    "--eval_steps", "4", "--max_eval_windows", "50", train=train)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 4 and results["test_windows"] == 50
    assert 0 < results["test_mse"] < 5 and 0 < results["eval_mse"] < 5
    # with the recipe's weight averaging: the checkpoint holds the average and, written once, the optimizer's weights
    assert (out / "checkpoint-4" / "training_weights.safetensors").is_file()
