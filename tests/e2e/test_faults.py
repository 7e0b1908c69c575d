"""Faults around training, export and evaluation: nothing stuck, nothing lost, every failure names what is wrong.

A kill while a checkpoint is written is simulated by truncating or deleting files of a real checkpoint (Trainer
writes model, optimizer, scheduler, RNG and `trainer_state.json` last); a failed fresh run by a bad argument and by
an error injected after the run folder is written; concurrent exports by a held lock and by two processes."""

import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_models.cli import main
from hf_models.hub import export as export_module
from hf_models.hub.export import IN_PROGRESS_NAME
from hf_models.training.arguments import parse_train_args
from hf_models.training.checkpoints import checkpoint_problems, resume_gaps
from hf_models.training.run import train


ROOT = Path(__file__).resolve().parents[2]
TINY = "configs/train/ngt_tinyshakespeare_tiny.yaml"
RUN = ["--max_steps", "20", "--save_steps", "10", "--logging_steps", "5", "--dataloader_num_workers", "0"]
LOGGER = "hf_models"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished 20-step run with checkpoint-10 and checkpoint-20 (the reference for resumed runs)."""
    folder = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", TINY, "--output_dir", str(folder), *RUN]) == 0
    return folder


def _losses(folder):
    state = json.loads((folder / "trainer_state.json").read_text())
    return {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}


def _killed_copy(run_dir, target, checkpoints=("checkpoint-10", "checkpoint-20")):
    """What a run folder holds when training was killed after its checkpoints: no final model or results."""
    target.mkdir()
    for path in run_dir.iterdir():
        if path.name.startswith("tokenizer") or path.name == "train_config.yaml":
            shutil.copy(path, target / path.name)
    for name in checkpoints:
        shutil.copytree(run_dir / name, target / name)
    return target


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --- the checkpoint check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda c: _truncate(c / "model.safetensors"), "model.safetensors", "is truncated"),
        (lambda c: _truncate(c / "model.safetensors", keep=0.999), "model.safetensors", "header announces"),
        (
            lambda c: (c / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"),
            "model.safetensors",
            "header is not valid JSON",
        ),  # fmt: skip
        (lambda c: (c / "model.safetensors").unlink(), "model.safetensors", "is missing"),
        (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json", "the checkpoint was not finished"),
        (lambda c: _truncate(c / "trainer_state.json"), "trainer_state.json", "is not valid JSON (line"),
        (lambda c: _truncate(c / "optimizer.pt"), "optimizer.pt", "not a complete torch.save archive"),
        (lambda c: _truncate(c / "scheduler.pt", keep=0.9), "scheduler.pt", "not a complete torch.save archive"),
        (lambda c: _truncate(c / "rng_state.pth"), "rng_state.pth", "not a complete torch.save archive"),
        (lambda c: (c / "config.json").write_text('{"model_type": "hfm_ngt",'), "config.json", "is not valid JSON"),
        (lambda c: (c / "config.json").unlink(), "config.json", "is missing"),
    ],
)
def test_checkpoint_check_names_the_damaged_file(run_dir, tmp_path, damage, file, message):
    checkpoint = shutil.copytree(run_dir / "checkpoint-20", tmp_path / "checkpoint-20")
    assert checkpoint_problems(checkpoint) == []
    damage(checkpoint)
    problems = checkpoint_problems(checkpoint)
    assert len(problems) == 1, problems
    assert str(checkpoint / file) in problems[0] and message in problems[0], problems


def test_missing_optimizer_scheduler_or_rng_state_is_reported(run_dir, tmp_path):
    checkpoint = shutil.copytree(run_dir / "checkpoint-10", tmp_path / "checkpoint-10")
    assert resume_gaps(checkpoint) == []
    (checkpoint / "scheduler.pt").unlink()
    (checkpoint / "rng_state.pth").unlink()
    assert checkpoint_problems(checkpoint) == []  # complete: these may be absent, but then start fresh
    optimizer, rng = resume_gaps(checkpoint)
    assert "no scheduler.pt" in optimizer and "the optimizer state (AdamW moments) and the learning-rate" in optimizer
    assert "no rng_state.pth" in rng and "random number generators start fresh" in rng
    # two processes restore rng_state_<rank>.pth each
    assert "rng_state_0.pth, rng_state_1.pth" in resume_gaps(checkpoint, world_size=2)[1]


# --- resume ---------------------------------------------------------------------------------------------------


def test_resume_skips_a_checkpoint_killed_while_written(run_dir, tmp_path, caplog):
    """Killed while checkpoint-20 was written (weights cut short, no trainer_state.json): --resume continues from
    checkpoint-10, says why it skips checkpoint-20, and ends with the uninterrupted run's losses."""
    killed = _killed_copy(run_dir, tmp_path / "killed")
    _truncate(killed / "checkpoint-20" / "model.safetensors")
    (killed / "checkpoint-20" / "trainer_state.json").unlink()
    assert main(["train", TINY, "--output_dir", str(killed), *RUN]) == 2  # a fresh run still refuses the folder
    with caplog.at_level("WARNING", logger=LOGGER):
        assert main(["train", TINY, "--resume", "--output_dir", str(killed), *RUN]) == 0
    warnings = caplog.text
    assert "skipping checkpoint-20" in warnings and "model.safetensors is truncated" in warnings
    assert "trainer_state.json is missing" in warnings and f"continuing from {killed / 'checkpoint-10'}" in warnings
    resumed, expected = _losses(killed), _losses(run_dir)
    assert sorted(resumed) == [5, 10, 15, 20]
    for step in expected:
        assert math.isclose(resumed[step], expected[step], rel_tol=1e-4), (step, resumed[step], expected[step])
    assert checkpoint_problems(killed / "checkpoint-20") == []  # rewritten whole by the resumed run


def test_resume_warns_which_state_starts_fresh(run_dir, tmp_path, caplog):
    from hf_models.training.run import _check_output_dir

    killed = _killed_copy(run_dir, tmp_path / "killed", checkpoints=("checkpoint-10",))
    (killed / "checkpoint-10" / "optimizer.pt").unlink()
    (killed / "checkpoint-10" / "rng_state.pth").unlink()
    with caplog.at_level("WARNING", logger=LOGGER):
        assert _check_output_dir(killed, resume=True) == str(killed / "checkpoint-10")
    assert "has no optimizer.pt: the optimizer state" in caplog.text
    assert "has no rng_state.pth: the random number generators start fresh" in caplog.text


def test_resume_without_a_complete_checkpoint_lists_each_problem(run_dir, tmp_path, capsys):
    killed = _killed_copy(run_dir, tmp_path / "killed")
    _truncate(killed / "checkpoint-10" / "optimizer.pt")
    (killed / "checkpoint-20" / "config.json").write_text("{")
    before = sorted(str(p.relative_to(killed)) for p in killed.rglob("*"))
    assert main(["train", TINY, "--resume", "--output_dir", str(killed), *RUN]) == 2
    err = capsys.readouterr().err
    assert "no complete checkpoint" in err and "Traceback" not in err
    assert f"checkpoint-10: {killed / 'checkpoint-10' / 'optimizer.pt'} is not a complete torch.save archive" in err
    assert f"checkpoint-20: {killed / 'checkpoint-20' / 'config.json'} is not valid JSON" in err
    assert sorted(str(p.relative_to(killed)) for p in killed.rglob("*")) == before  # nothing touched


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_again(run_dir, tmp_path, caplog):
    killed = _killed_copy(run_dir, tmp_path / "killed", checkpoints=())
    with caplog.at_level("WARNING", logger=LOGGER):
        assert main(["train", TINY, "--resume", "--output_dir", str(killed), "--max_steps", "2"]) == 0
    assert "stopped before its first checkpoint; it starts again from step 0" in caplog.text
    assert json.loads((killed / "eval_results.json").read_text())["global_step"] == 2


# --- a fresh run that fails -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--per_device_train_batch_size", "0"], "training.per_device_train_batch_size=0 is invalid"),
        (["--gradient_accumulation_steps", "0"], "training.gradient_accumulation_steps=0 is invalid"),
        (["--max_steps", "0"], "training.max_steps=0 is invalid"),
        (["--learning_rate", "nan"], "training.learning_rate=nan is invalid"),
        (["--learning_rate", "-0.1"], "training.learning_rate=-0.1 is invalid"),
        (["--seed", "-1"], "training.seed=-1 is invalid"),
        (["--save_steps", "0"], "training.save_steps=0.0 is invalid"),
        (["--max_grad_norm", "inf"], "training.max_grad_norm=inf is invalid"),
        (["--ema_decay", "1"], "training.ema_decay=1.0 is invalid: must be in [0, 1)"),
        (["--ema_decay", "-0.5"], "training.ema_decay=-0.5 is invalid"),
        (["--block_size", "1"], "data.block_size=1 is invalid"),
        (["--val_fraction", "1.5"], "data.val_fraction=1.5 is invalid"),
        (["--corpus", "no/such/corpus.txt"], "data.corpus='no/such/corpus.txt': file not found"),
        (["--validation_file", "held_out.txt"], "data.validation_file='held_out.txt': file not found"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, arguments, message, capsys):
    out = tmp_path / "run"
    assert main(["train", TINY, "--output_dir", str(out), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("model:\n  config: configs/models/ngt/tiny.json\ndata: [\n  corpus: x\n")
    assert main(["train", str(config), "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hf-models train: {config}: YAML syntax error at line ") and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_a_broken_run_config_is_named_by_evaluate_and_export(run_dir, tmp_path, capsys):
    run = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*"))
    (run / "train_config.yaml").write_text("data:\n  corpus: x\n block_size: 32\n")
    for command in (["evaluate", str(run)], ["export", str(run), str(tmp_path / "export")]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert f"{run / 'train_config.yaml'}: YAML syntax error at line 3" in err and "\n" not in err, err
    assert not (tmp_path / "export").exists() and not (tmp_path / "export.partial").exists()


class _FailAt(TrainerCallback):
    def __init__(self, step, error=RuntimeError):
        self.step, self.error = step, error

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise self.error(f"injected failure at step {self.step}")


def test_a_fresh_run_that_fails_before_its_first_checkpoint_cleans_up(tmp_path, shared_data, caplog):
    """After the run folder is written (tokenizer, train_config.yaml, a sample), training fails: what the run wrote
    is removed, and the same command then runs."""
    made = tmp_path / "made"  # created by the run: removed with everything in it
    args = parse_train_args(TINY, ["--output_dir", str(made), *RUN, "--eval_strategy", "steps", "--eval_steps", "2"])
    with caplog.at_level("WARNING", logger=LOGGER), pytest.raises(RuntimeError, match="injected"):
        train(*args, callbacks=[_FailAt(4)])
    assert "failed before its first complete checkpoint" in caplog.text and not made.exists()
    given = tmp_path / "given"  # an empty folder the user made: kept, emptied
    given.mkdir()
    args = parse_train_args(TINY, ["--output_dir", str(given), *RUN])
    with pytest.raises(KeyboardInterrupt):
        train(*args, callbacks=[_FailAt(3, KeyboardInterrupt)])
    assert given.is_dir() and not any(given.iterdir())
    assert main(["train", TINY, "--output_dir", str(given), "--max_steps", "2"]) == 0
    assert json.loads((given / "eval_results.json").read_text())["global_step"] == 2


def test_a_failed_fresh_image_run_cleans_up_too(tmp_path, shared_data):
    out = tmp_path / "mnist"  # the image path writes its processor and train_config.yaml, then fails in training
    args = parse_train_args("configs/train/mhc_mnist_tiny.yaml", ["--output_dir", str(out), "--save_steps", "4"])
    with pytest.raises(RuntimeError, match="injected"):
        train(*args, callbacks=[_FailAt(2)])
    assert not out.exists()


def test_a_fresh_run_that_fails_after_a_complete_checkpoint_keeps_it(tmp_path, shared_data):
    out = tmp_path / "run"
    args = parse_train_args(TINY, ["--output_dir", str(out), *RUN])
    with pytest.raises(RuntimeError, match="injected"):
        train(*args, callbacks=[_FailAt(12)])
    assert checkpoint_problems(out / "checkpoint-10") == [] and (out / "train_config.yaml").exists()


# --- export ----------------------------------------------------------------------------------------------------


def test_export_while_another_export_holds_the_target_fails_cleanly(run_dir, tmp_path, capsys):
    out = tmp_path / "export"
    partial = tmp_path / "export.partial"
    partial.mkdir()
    (partial / IN_PROGRESS_NAME).write_text("another export\n")
    handle = os.open(partial, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running export holds
    try:
        assert main(["export", str(run_dir), str(out)]) == 2
    finally:
        os.close(handle)
    err = capsys.readouterr().err
    assert f"another export to {out} is in progress (it holds {partial})" in err and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in partial.iterdir()) == [IN_PROGRESS_NAME]  # left to its owner


def test_two_exports_to_one_target_one_wins_the_other_fails_cleanly(run_dir, tmp_path):
    out = tmp_path / "export"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hf_models.cli", "export", str(run_dir), str(out)]
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((process.wait(timeout=300), process.stderr.read()) for process in processes)
    (ok, _), (failed, err) = outcomes
    assert (ok, failed) == (0, 2), outcomes
    # overlapping: the lock is taken; one after the other: the target is no longer empty
    assert "another export to" in err or "is not empty" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "export.partial").exists() and not (out / IN_PROGRESS_NAME).exists()
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


def test_export_replaces_a_partial_folder_left_by_a_killed_export(run_dir, tmp_path, caplog):
    out = tmp_path / "export"
    partial = tmp_path / "export.partial"
    partial.mkdir()
    (partial / IN_PROGRESS_NAME).write_text("killed export\n")
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    with caplog.at_level("WARNING", logger=LOGGER):
        assert main(["export", str(run_dir), str(out)]) == 0
    assert f"replacing {partial}, left unfinished by an interrupted export" in caplog.text
    assert not partial.exists() and not (out / IN_PROGRESS_NAME).exists()
    assert (out / "model.safetensors").stat().st_size > 1000
    # a folder of that name that no export wrote is not touched
    foreign = tmp_path / "other.partial"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir), str(tmp_path / "other")]) == 2
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_failed_export_leaves_no_folder(run_dir, tmp_path, monkeypatch, capsys):
    def broken_card(*args, **kwargs):
        raise ValueError("card template broken")

    monkeypatch.setattr(export_module, "build_card", broken_card)
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 2
    assert "card template broken" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "export.partial").exists()


def test_export_skips_an_unfinished_checkpoint_and_names_a_damaged_model(run_dir, tmp_path, caplog, capsys):
    killed = _killed_copy(run_dir, tmp_path / "killed")
    (killed / "checkpoint-20" / "trainer_state.json").unlink()
    with caplog.at_level("WARNING", logger=LOGGER):
        assert main(["export", str(killed), str(tmp_path / "export")]) == 0
    assert "skipping checkpoint-20" in caplog.text
    exported = load_file(tmp_path / "export" / "model.safetensors")
    saved = load_file(killed / "checkpoint-10" / "model.safetensors")
    assert exported and all(torch.equal(exported[name], saved[name]) for name in exported)
    capsys.readouterr()
    assert main(["evaluate", str(killed)]) == 2  # no final model: points at the checkpoint to evaluate
    assert f"holds no final model (its training did not finish); evaluate {killed / 'checkpoint-10'}" in (
        capsys.readouterr().err
    )

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("checkpoint-*"))
    _truncate(broken / "model.safetensors")
    assert main(["export", str(broken), str(tmp_path / "export2")]) == 2
    err = capsys.readouterr().err
    assert f"{broken / 'model.safetensors'} is truncated" in err and "Traceback" not in err
    assert not (tmp_path / "export2").exists() and not (tmp_path / "export2.partial").exists()


# --- evaluate and push ------------------------------------------------------------------------------------------


def test_evaluate_on_other_data_keeps_the_recorded_results(run_dir, tmp_path, shared_data, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    card_results = (out / "eval_results.json").read_bytes()
    capsys.readouterr()
    other = tmp_path / "other.txt"
    other.write_text((shared_data / "tinyshakespeare.txt").read_text()[:4000])
    assert main(["evaluate", str(out), "--corpus", str(other)]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert "results not written" in captured.err and "--output" in captured.err
    assert (out / "eval_results.json").read_bytes() == card_results  # still what the card reports

    target = tmp_path / "other_results.json"
    assert main(["evaluate", str(out), "--corpus", str(other), "--output", str(target)]) == 0
    assert f"results written to {target}" in capsys.readouterr().err
    assert json.loads(target.read_text()) == printed

    # a run folder evaluated on other data or another block size: its own results stay
    recorded = (run_dir / "eval_results.json").read_bytes()
    assert main(["evaluate", str(run_dir), "--corpus", str(other)]) == 0
    assert main(["evaluate", str(run_dir), "--block-size", "16"]) == 0
    assert (run_dir / "eval_results.json").read_bytes() == recorded

    for arguments, message in (
        (["--corpus", str(tmp_path / "missing.txt")], f"--corpus {tmp_path / 'missing.txt'}: file not found"),
        (["--corpus", str(other), "--output", str(tmp_path / "no" / "r.json")], "must name a file in an existing"),
    ):
        assert main(["evaluate", str(out), *arguments]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "no").exists() and (out / "eval_results.json").read_bytes() == card_results


def test_evaluate_names_a_damaged_model_file(run_dir, tmp_path, capsys):
    folder = shutil.copytree(run_dir / "checkpoint-10", tmp_path / "model")
    _truncate(folder / "model.safetensors")
    assert main(["evaluate", str(folder), "--corpus", "README.md"]) == 2
    assert f"{folder / 'model.safetensors'} is truncated" in capsys.readouterr().err
    (folder / "config.json").unlink()
    assert main(["evaluate", str(folder), "--corpus", "README.md"]) == 2
    assert "holds no model: config.json is missing" in capsys.readouterr().err


def test_push_without_network_fails_in_one_line_and_uploads_nothing(run_dir, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(run_dir), str(out)]) == 0
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    # a token, the Hub allowed, and an endpoint nothing listens on: the connection is refused at once
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_" + "x" * 34, "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = subprocess.run([sys.executable, "-m", "hf_models.cli", "push", str(out), "someone/ngt-test"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf-models push: upload to someone/ngt-test at http://127.0.0.1:9")
    assert "nothing was uploaded" in lines[0]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before
