"""Which `checkpoint-*` folders of a run can be resumed from (or exported), checked without loading them.

`Trainer._save_checkpoint` (transformers 5.x) writes, in this order: the model (`config.json`, `model.safetensors`,
the tokenizer or processor; with weight averaging `training_weights.safetensors` before them, training/averaging.py),
`optimizer.pt`, `scheduler.pt`, `scaler.pt` (fp16 on a GPU), `rng_state*.pth`, and `trainer_state.json` last. A
process killed while a checkpoint is written therefore leaves a folder without `trainer_state.json` or with a
truncated file. A checkpoint is complete when

- `config.json` and `trainer_state.json` parse as JSON objects (the state with its `global_step`),
- every `*.safetensors` file (and each shard a `model.safetensors.index.json` lists) holds the bytes its header
  announces,
- every torch file (`*.pt`, `*.pth`, `*.bin`) is a complete zip archive (the `torch.save` format): read through its
  zip directory, never unpickled.

Optimizer, scheduler and RNG files may be missing from a complete checkpoint (`save_only_model`, another world
size): Trainer then starts that state fresh without a word, so `resume_gaps` says which.
"""

import json
import re
import zipfile
from pathlib import Path


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils' own pattern
STATE_NAME = "trainer_state.json"


def checkpoints_newest_first(run_dir):
    """The `checkpoint-<step>` folders of `run_dir`, highest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found, reverse=True)]


def _json_problem(path, required_key=None):
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        return f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
    except (OSError, UnicodeDecodeError) as error:
        return f"{path} cannot be read: {error}"
    if not isinstance(content, dict):
        return f"{path} does not hold a JSON object"
    if required_key is not None and required_key not in content:
        return f"{path} lacks {required_key!r}"
    return None


def safetensors_problem(path):
    """What is wrong with a safetensors file (None if nothing): an 8-byte little-endian header length, a JSON header
    whose largest `data_offsets` end, after the header, is the file's end."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"{path} is truncated ({size} bytes; a safetensors file starts with an 8-byte header length)"
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        if 8 + header_size > size:
            return f"{path} is truncated: its header needs {8 + header_size} bytes, the file has {size}"
        try:
            header = json.loads(handle.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{path} is damaged: its header is not valid JSON"
    if not isinstance(header, dict):
        return f"{path} is damaged: its header is not a JSON object"
    try:
        data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError):
        return f"{path} is damaged: a tensor entry of its header has no data_offsets"
    expected = 8 + header_size + data_end
    if expected != size:
        state = "truncated" if size < expected else "damaged"
        return f"{path} is {state}: its header announces {expected} bytes, the file has {size}"
    return None


def torch_file_problem(path):
    """What is wrong with a `torch.save` file (None if nothing): it must open as a zip archive whose entries all lie
    inside the file. A truncated archive has lost the zip directory at its end."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"{path} is not a complete torch.save archive ({size} bytes; {error}): truncated or damaged"
    if not entries:
        return f"{path} is an empty archive"
    for entry in entries:
        if entry.header_offset + entry.compress_size > size:
            return f"{path} is truncated: its entry {entry.filename} ends past the file's {size} bytes"
    return None


def _engine_state(folder):
    """DeepSpeed (`global_step*/`) and FSDP (`pytorch_model_fsdp_*/`, `optimizer_*/`) keep model and optimizer
    state in sub-folders of their own; those checkpoints need no model.safetensors / optimizer.pt."""
    return any(path.is_dir() for path in folder.iterdir())


def checkpoint_problems(folder):
    """Each reason why `folder` (a checkpoint) cannot be resumed from, naming the file and what is wrong; [] when it
    is complete."""
    folder = Path(folder)
    problems = []
    state = folder / STATE_NAME
    if not state.is_file():
        problems.append(f"{state} is missing (Trainer writes it last: the checkpoint was not finished)")
    elif problem := _json_problem(state, "global_step"):
        problems.append(problem)
    config = folder / "config.json"
    if not config.is_file():
        problems.append(f"{config} is missing")
    elif problem := _json_problem(config):
        problems.append(problem)
    weights = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        if problem := _json_problem(index, "weight_map"):
            problems.append(problem)
        else:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            problems += [f"{folder / shard} is missing (listed in {index.name})" for shard in shards
                         if not (folder / shard).is_file()]  # fmt: skip
    elif not weights and not (folder / "pytorch_model.bin").is_file() and not _engine_state(folder):
        problems.append(f"{folder / 'model.safetensors'} is missing (the checkpoint holds no model weights)")
    problems += [problem for path in weights if (problem := safetensors_problem(path))]
    torch_files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".pt", ".pth", ".bin"))
    problems += [problem for path in torch_files if (problem := torch_file_problem(path))]
    return problems


def newest_complete_checkpoint(run_dir):
    """(the newest complete checkpoint of `run_dir` or None, [(newer incomplete checkpoint, its problems), ...])."""
    skipped = []
    for checkpoint in checkpoints_newest_first(run_dir):
        problems = checkpoint_problems(checkpoint)
        if not problems:
            return checkpoint, skipped
        skipped.append((checkpoint, problems))
    return None, skipped


def resume_gaps(folder, world_size=1):
    """The training state a complete checkpoint lacks, which Trainer then starts fresh without saying so."""
    folder = Path(folder)
    if _engine_state(folder):  # DeepSpeed / FSDP restore optimizer and scheduler from their own folders
        return []
    gaps = []
    missing = [name for name in ("optimizer.pt", "scheduler.pt") if not (folder / name).is_file()]
    if missing:
        # Trainer restores optimizer and scheduler together or not at all
        gaps.append(
            f"{folder} has no {' and no '.join(missing)}: the optimizer state (AdamW moments) and the learning-rate "
            "schedule start fresh"
        )
    rng_names = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]
    lacking = [name for name in rng_names if not (folder / name).is_file()]
    if lacking:
        gaps.append(
            f"{folder} has no {', '.join(lacking)}: the random number generators start fresh (data order and "
            "dropout differ from an uninterrupted run)"
        )
    return gaps
