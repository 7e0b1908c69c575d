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


@pytest.mark.slow
def test_two_process_cpu_ddp_run(tmp_path, shared_data):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / "cpu_ddp_2proc.yaml"),
        "-m", "hf_models.cli", "train", "configs/train/ngt_tinyshakespeare_tiny.yaml", "--output_dir", str(out),
        "--max_steps", "6", "--logging_steps", "3", "--save_steps", "3", "--max_eval_blocks", "4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == 6
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
