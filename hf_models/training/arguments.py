"""Arguments of `hf-models train`: a YAML file with `model:`, `data:` and `training:` sections, command-line
overrides on top (`--<field> VALUE`, any field of the three sections), all parsed by `HfArgumentParser`.

    model:
      config: configs/models/ngt/small.json     # a model config file (relative paths: cwd, then the repository)
      overrides: {hidden_dropout: 0.1}           # fields set on top of it
    data:
      corpus: ../shared/data/tinyshakespeare.txt # a local text file (or `dataset: <Hub id>`)
      tokenizer: char                            # char | bpe | gpt2
      block_size: 256
    training:                                    # transformers.TrainingArguments fields, plus precision
      output_dir: runs/ngt_tinyshakespeare_small
      max_steps: 2000
"""

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..resources import checkout_root, resolve, searched
from .precision import choose_precision, training_device


# a run folder's resolved configuration (written by train, read by evaluate and export)
RUN_CONFIG_NAME = "train_config.yaml"


REPO_ROOT = checkout_root()  # None in a wheel install, whose configs/ ship inside the package (hf_models/resources.py)


@dataclass
class ModelArguments:
    model_config: str = field(metadata={"help": "model config JSON (e.g. configs/models/ngt/small.json)"})
    model_overrides: str = field(default="{}", metadata={"help": "JSON object of config fields set on top"})


@dataclass
class TrainArguments(TrainingArguments):
    """`TrainingArguments` plus `precision`, which picks bf16/fp16 for the machine at hand, weight averaging
    (`ema_decay`) and the generated-sample settings of text runs."""

    precision: str = field(
        default="auto",
        metadata={
            "help": "auto | no | bf16 | fp16. auto: bf16 on GPUs that have it (else fp16 on CUDA), bf16 on CPUs with "
            "native bf16 (AVX512-BF16/AMX), else float32; an explicit --bf16/--fp16 wins"
        },
    )
    ema_decay: float = field(
        default=0.0,
        metadata={
            "help": "0 (default): off. In (0, 1): evaluate, checkpoint and return an exponential moving average of the "
            "weights, updated after each optimizer step with decay min(ema_decay, (1 + step) / (10 + step)); the "
            "optimizer's own weights are kept for --resume (training/averaging.py)"
        },
    )
    sample_prompt: str = field(
        default="\n", metadata={"help": "text models: the prompt of the sample generated at each evaluation"}
    )
    sample_max_new_tokens: int = field(
        default=200,
        metadata={
            "help": "text models: tokens sampled after `sample_prompt` at each evaluation and at the end of training, "
            "logged and appended to samples.jsonl in output_dir (0 = no samples)"
        },
    )


SECTIONS = {"model": ModelArguments, "data": None, "training": TrainArguments}  # data: the task's `data_arguments`
_RENAMES = {("model", "config"): "model_config", ("model", "overrides"): "model_overrides"}


def resolve_path(path):
    """A path as given (relative to the working directory), else relative to the repository checkout, else in the
    package (a wheel install: `configs/...` are the shipped configs)."""
    return resolve(path)


def load_yaml(path):
    """A YAML file's content; a syntax error becomes a ValueError naming the file and the line."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path}: YAML syntax error{where}: {error.problem or error.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable YAML file: {error}") from None


def _merged(base, override):
    """`override` on top of `base`: mappings merge key by key (recursively), anything else is replaced."""
    result = dict(base)
    for key, value in override.items():
        result[key] = (
            _merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
        )
    return result


def _read_sections(config_path, _including=()):
    """The sections of a run YAML. `inherit: base.yaml` (or a list of files, paths relative to this file) starts from
    those files' sections, merged in order, and this file's values win (mappings such as `model.overrides` merge key
    by key)."""
    config_path = Path(config_path)
    raw = load_yaml(config_path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path}: the top level must be a mapping with model/data/training sections")
    bases = raw.pop("inherit", None)
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
            raise ValueError(f"{config_path}: inherit must name a YAML file or a list of them; got {bases!r}")
        merged = {}
        for base in bases:
            path = (config_path.parent / base).resolve()
            if path in _including or path == config_path.resolve():
                raise ValueError(f"{config_path}: inherit {base!r} includes itself (a cycle through {path.name})")
            if not path.is_file():
                raise ValueError(f"{config_path}: inherit {base!r}: no such file {path}")
            merged = _merged(merged, _read_sections(path, (*_including, config_path.resolve())))
        raw = _merged(merged, raw)
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{config_path}: unknown section(s) {sorted(unknown)}; expected {sorted(SECTIONS)}")
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ValueError(f"{config_path}: section {section!r} must be a mapping")
    return raw


def _flatten(config_path, raw, sections):
    flat = {}
    for section, values in raw.items():
        allowed = {f.name for f in fields(sections[section])}
        for key, value in values.items():
            name = _RENAMES.get((section, key), key)
            if name not in allowed:
                raise ValueError(f"{config_path}: {section}.{key} is not a field of {sections[section].__name__}")
            flat[name] = json.dumps(value) if name == "model_overrides" else value
    return flat


def _to_argv(flat):
    argv = []
    for key, value in flat.items():
        if value is None:
            continue
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def _precision_flags(training_args):
    """`--bf16 true` / `--fp16 true` as `training.precision` resolves on this host (none for float32). An explicit
    --bf16/--fp16 wins over `precision`, and is checked against the host the same way."""
    requested = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else training_args.precision
    precision = choose_precision(requested, training_device(training_args.use_cpu))
    return [] if precision == "no" else [f"--{precision}", "true"]


def _split_cli_args(cli_args, sections):
    """`cli_args` as (options for the three sections, `--model_overrides` values, model config fields): an option whose
    name is not a field of the model/data/training sections is taken as a field of the model config, `--name VALUE`
    or `--name=VALUE`, its value read as YAML (`soft`, `0.1`, `true`, `[1, 2]`)."""
    known = {f.name for section in sections.values() for f in fields(section)}
    passed, json_overrides, fields_given = [], [], {}
    args, i = list(cli_args), 0
    while i < len(args):
        arg = args[i]
        name, has_value, value = arg[2:].partition("=") if arg.startswith("--") else (None, "", None)
        if name is None or name in known and name != "model_overrides":
            passed.append(arg)
            i += 1
            continue
        if not has_value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ValueError(f"--{name} needs a value (--{name} VALUE)")
            value, i = args[i + 1], i + 1
        i += 1
        if name == "model_overrides":
            json_overrides.append(value)
            continue
        try:
            fields_given[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            fields_given[name] = value
    return passed, json_overrides, fields_given


def _json_overrides(text, origin):
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{origin} must be a JSON object: {error}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"{origin} must be a JSON object (a mapping of config fields); got {overrides!r}")
    return overrides


def _config_fields(config):
    """The field names of a model config (its class's defaults and the file's own keys)."""
    return set(config.to_dict()) | set(vars(config))


def parse_train_args(config_path, cli_args=()):
    """Parse the YAML file at `config_path`, then `cli_args` (which win). Returns the three dataclasses.

    A command-line `--<field> VALUE` that is not a field of the three sections sets that field of the model config,
    on top of the YAML's `model.overrides` (so does `--model_overrides '{json}'`, merged the same way); a name that
    is a field of neither is refused."""
    config_path = resolve_path(config_path)
    if not Path(config_path).is_file():
        raise ValueError(f"train config not found: {config_path}")
    raw = _read_sections(config_path)
    model_config = (raw.get("model") or {}).get("config")
    for i, arg in enumerate(cli_args):  # a --model_config on the command line names the model (and so the task)
        if arg == "--model_config" and i + 1 < len(cli_args):
            model_config = cli_args[i + 1]
        elif arg.startswith("--model_config="):
            model_config = arg.partition("=")[2]
    if model_config is None:
        raise ValueError(f"{config_path}: model.config is missing (a model config file, e.g. configs/models/...)")
    from ..tasks import task_for_config

    config = _load_model_config(model_config)
    task = task_for_config(config, f"model.config {model_config}")
    sections = {**SECTIONS, "data": task.data_arguments}
    flat = _flatten(config_path, raw, sections)
    cli_args, json_overrides, field_overrides = _split_cli_args(cli_args, sections)
    overrides = _json_overrides(flat.get("model_overrides", "{}"), f"{config_path}: model.overrides")
    for text in json_overrides:
        overrides.update(_json_overrides(text, "--model_overrides"))
    if field_overrides:
        unknown = sorted(set(field_overrides) - _config_fields(config))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join('--' + name for name in unknown)}: not a field of the model, data "
                f"({task.name}: {task.data_arguments.__name__}) or training sections, nor of {type(config).__name__} "
                f"({model_config})"
            )
        overrides.update(field_overrides)
    flat["model_overrides"] = json.dumps(overrides)
    parser = HfArgumentParser((ModelArguments, task.data_arguments, TrainArguments))
    argv = _to_argv(flat) + list(cli_args)
    if training_device() == "cpu":
        # No accelerator: the run is on the CPU whatever the file says. TrainingArguments refuses bf16 on a CPU unless
        # told so, and a multi-process run (torchrun / accelerate launch) then takes gloo.
        argv += ["--use_cpu", "true"]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    if training_args.push_to_hub:
        raise ValueError(
            "training.push_to_hub=True is refused: Trainer's push uploads its own README.md over the model card. "
            "Publish with `hf-models export RUN_DIR OUT_DIR` and `hf-models push OUT_DIR REPO_ID`"
        )
    precision = _precision_flags(training_args)
    if precision:
        argv += precision
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    # `--corpus ""` unsets a path the YAML gave: the optional fields (default None; HfArgumentParser rewrites the
    # dataclass's annotations, so the default is what says so)
    for item in fields(data_args):
        if item.default is None and getattr(data_args, item.name) == "":
            setattr(data_args, item.name, None)
    if training_args.sample_max_new_tokens < 0:
        raise ValueError(
            f"training.sample_max_new_tokens={training_args.sample_max_new_tokens} is invalid: must be >= 0 "
            "(0 turns the samples off)"
        )
    if training_args.sample_max_new_tokens > 0 and not training_args.sample_prompt:
        raise ValueError("training.sample_prompt is empty: give the sample at least one character to start from")
    task.check_data(data_args)
    _check_training_numbers(training_args)
    return model_args, data_args, training_args


def _load_model_config(model_config):
    """The model config a run names (a file, a folder or a Hub id), read once: its task and its fields come from it."""
    from transformers import AutoConfig

    path = resolve_path(model_config)
    if str(model_config).endswith(".json") and not path.is_file():
        raise ValueError(f"model.config={str(model_config)!r}: file not found (relative paths: "
                         f"{searched()})")  # fmt: skip
    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"model.config={str(model_config)!r} cannot be read: {error}") from None


def check_files(named):
    """The files a run reads exist ({"data.corpus": path or None, ...}): a missing file stops the run before its folder
    is written."""
    for name, path in named.items():
        if path is not None and not resolve_path(path).is_file():
            raise ValueError(f"{name}={str(path)!r}: file not found (relative paths: "
                             f"{searched()})")  # fmt: skip


def _check_training_numbers(args):
    """TrainingArguments accepts numbers that only fail inside Trainer (batch size 0 in the DataLoader, a negative
    seed in numpy) or that train nothing useful (a NaN learning rate); they are refused here, before anything is
    written, with the field and the value."""
    counts = {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1,
              "dataloader_num_workers": 0, "seed": 0}  # fmt: skip
    for name, least in counts.items():
        if getattr(args, name) < least:
            raise ValueError(f"training.{name}={getattr(args, name)} is invalid: must be >= {least}")
    if args.eval_accumulation_steps is not None and args.eval_accumulation_steps < 1:
        raise ValueError(f"training.eval_accumulation_steps={args.eval_accumulation_steps} is invalid: must be >= 1")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(
            f"training.max_steps={args.max_steps} is invalid: must be >= 1, or -1 to train num_train_epochs"
        )
    if args.max_steps == -1 and not (math.isfinite(args.num_train_epochs) and args.num_train_epochs > 0):
        raise ValueError(
            f"training.num_train_epochs={args.num_train_epochs} is invalid: must be > 0 (or set max_steps)"
        )
    at_least_zero = ("learning_rate", "weight_decay", "warmup_steps", "adam_epsilon", "label_smoothing_factor")
    for name in at_least_zero:
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"training.{name}={value} is invalid: must be a finite number >= 0")
    for name in ("adam_beta1", "adam_beta2", "label_smoothing_factor", "ema_decay"):
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"training.{name}={getattr(args, name)} is invalid: must be in [0, 1)")
    if args.max_grad_norm is not None and not math.isfinite(args.max_grad_norm):
        raise ValueError(f"training.max_grad_norm={args.max_grad_norm} is invalid: must be finite (<= 0: no clipping)")
    # steps between logs / evaluations / checkpoints: an int >= 1, or a float in (0, 1) = that share of the run
    strategies = {"logging_steps": args.logging_strategy, "eval_steps": args.eval_strategy,
                  "save_steps": args.save_strategy}  # fmt: skip
    for name, strategy in strategies.items():
        value = getattr(args, name)
        if str(getattr(strategy, "value", strategy)) == "steps" and value is not None and not value > 0:
            raise ValueError(f"training.{name}={value} is invalid: must be > 0 with {name[:-6]}_strategy 'steps'")


def resolved_config(model_args, data_args, training_args):
    """The configuration a run actually used, as a YAML-ready dict (saved next to the run)."""
    training = {k: v for k, v in training_args.to_dict().items() if not k.startswith("_")}
    data = {f.name: getattr(data_args, f.name) for f in fields(data_args)}
    model = {"config": model_args.model_config, "overrides": json.loads(model_args.model_overrides)}
    return {"model": model, "data": data, "training": training}
