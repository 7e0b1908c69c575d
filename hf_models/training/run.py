"""`hf-models train` and `hf-models evaluate`: one path for every task. The task of a run comes from its model config
(`hf_models.tasks.task_for_config`), of a saved folder from its config.json; the task builds the data, preprocessor,
model and metrics, and this module runs `transformers.Trainer` (progress bars, logging, checkpoints, resume), keeps
the run folder consistent and records the results."""

import contextlib
import json
import shutil
from pathlib import Path

import yaml
from transformers import AutoConfig
from transformers.utils import logging

from ..tasks import task_for_config, task_of_folder
from ..tasks.causal_lm import evaluate_lm, generate_sample, last_sample  # noqa: F401  (the package's API)
from .arguments import RUN_CONFIG_NAME, load_yaml, resolve_path, resolved_config
from .checkpoints import newest_complete_checkpoint, resume_gaps, safetensors_problem
from .nested import NestedTrainer


logger = logging.get_logger(__name__)


EVAL_RESULTS_NAME = "eval_results.json"


def load_model_config(model_args, **fields):
    """The model config file with the run's overrides and `fields` applied, re-validated."""
    config = AutoConfig.from_pretrained(str(resolve_path(model_args.model_config)))
    for key, value in {**json.loads(model_args.model_overrides), **fields}.items():
        if not hasattr(config, key) and key not in fields:
            raise ValueError(f"model override {key!r} is not a field of {type(config).__name__}")
        setattr(config, key, value)
    return type(config)(**config.to_dict())


def _raw_model_config(model_args):
    return AutoConfig.from_pretrained(str(resolve_path(model_args.model_config)))


def task_of_run(model_args):
    """The task a run trains: the one its model config names (`architectures`), or the only one its model has."""
    return task_for_config(_raw_model_config(model_args), f"model.config {model_args.model_config}")


class _Run:
    """What a task's `train` gets from the generic path: the run folder, the callbacks, the model config with the
    run's overrides (`model_config(**fields)`), and `trainer(preprocessor, **trainer_kwargs)`, which starts the run
    folder, trains, saves and returns the trainer ready for the final evaluation."""

    def __init__(self, model_args, data_args, training_args, resume, last_checkpoint, callbacks):
        self.arguments = (model_args, data_args, training_args)
        self.output_dir = Path(training_args.output_dir)
        self.resume, self.last_checkpoint = resume, last_checkpoint
        self.callbacks = list(callbacks or [])

    def model_config(self, **fields):
        return load_model_config(self.arguments[0], **fields)

    def trainer(self, preprocessor, **trainer_kwargs):
        self.last_trainer = _run_trainer(self.output_dir, preprocessor, self.arguments, self.resume,
                                         self.last_checkpoint, **trainer_kwargs)  # fmt: skip
        return self.last_trainer


def train(model_args, data_args, training_args, resume=False, callbacks=None):
    """Train, save the final model and preprocessor in `output_dir`, evaluate; returns the eval results.

    `resume` continues from the newest complete `checkpoint-*` in `output_dir` (weights, optimizer, scheduler, RNG
    and data position, so the loss curve continues without a gap), skipping newer ones a kill left unfinished. A
    fresh run refuses a non-empty `output_dir`, and if it fails before its first complete checkpoint it removes
    what it wrote, so the same command can run again.
    """
    output_dir = Path(training_args.output_dir)
    task = task_of_run(model_args)
    task.check_data(data_args)
    last_checkpoint = _check_output_dir(output_dir, resume, training_args.world_size)
    run = _Run(model_args, data_args, training_args, resume, last_checkpoint, callbacks)
    results = task.train(model_args, data_args, training_args, run)
    if results is not None:  # the main process
        results = _finish_run(output_dir, run.last_trainer.state.global_step, training_args, results)
    # Every process ends here together and the process group is closed: a process that left while the main one was
    # still at work (a forecaster's test evaluation) could abort on exit ("terminate called without an active
    # exception", from its still-open process group), failing the whole launch.
    accelerator = run.last_trainer.accelerator
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def _run_trainer(output_dir, preprocessor, arguments, resume, last_checkpoint, **trainer_kwargs):
    """Start the run folder, train with `NestedTrainer(**trainer_kwargs)` (Trainer plus level-wise learning rates,
    training progress and skipped non-finite batches; training/nested.py) (a fresh run that fails before its first complete
    checkpoint removes what it wrote), save the final model and state; returns the trainer, ready for the final
    evaluation in float32."""
    model_args, data_args, training_args = arguments
    with _removed_if_failed(output_dir, fresh=not resume, main_process=training_args.process_index == 0):
        _start_run(output_dir, preprocessor, model_args, data_args, training_args)
        trainer = NestedTrainer(args=training_args, processing_class=preprocessor, **trainer_kwargs)
        trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    _without_autocast(trainer)
    return trainer


def _without_autocast(trainer):
    """For mixed-precision training accelerate wraps the model's forward in autocast; the final evaluation runs the
    saved float32 weights without it, as `hf-models evaluate` and a user loading the model do, so the recorded results
    (and the card) match theirs."""
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def _finish_run(output_dir, global_step, training_args, results):
    """Record the final results with the run's step count, world size and precision in eval_results.json."""
    results = {
        **results,
        "global_step": global_step,
        "world_size": training_args.world_size,
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no",
    }
    (output_dir / EVAL_RESULTS_NAME).write_text(json.dumps(results, indent=2) + "\n")
    return results


def _start_run(output_dir, preprocessor, model_args, data_args, training_args):
    """The run folder with the tokenizer or image processor and the resolved configuration (main process)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if training_args.process_index == 0:
        preprocessor.save_pretrained(output_dir)
        resolved = resolved_config(model_args, data_args, training_args)
        (output_dir / RUN_CONFIG_NAME).write_text(yaml.safe_dump(resolved, sort_keys=False))


def _check_output_dir(output_dir, resume, world_size=1):
    """The checkpoint to resume from (None: start at step 0). A fresh run refuses a non-empty folder (nothing is
    overwritten). `resume` takes the newest complete checkpoint, saying which newer ones it skips and which state
    starts fresh; a run folder killed before its first checkpoint starts again."""
    if not resume:
        if output_dir.is_dir() and any(output_dir.iterdir()):
            raise ValueError(
                f"output_dir {output_dir} is not empty; pass --resume to continue its run or choose another "
                "--output_dir (nothing already written is overwritten)"
            )
        return None
    checkpoint, skipped = newest_complete_checkpoint(output_dir)
    for folder, problems in skipped:
        logger.warning(f"--resume: skipping {folder.name}, which is incomplete: {'; '.join(problems)}")
    if checkpoint is not None:
        if skipped:
            logger.warning(f"--resume: continuing from {checkpoint}")
        for gap in resume_gaps(checkpoint, world_size):
            logger.warning(f"--resume from {checkpoint.name}: {gap}")
        return str(checkpoint)
    if skipped:
        listing = "\n".join(f"  {folder.name}: {'; '.join(problems)}" for folder, problems in skipped)
        raise ValueError(
            f"--resume: no complete checkpoint in {output_dir}:\n{listing}\nRemove these folders and run the same "
            "command again to restart the run from step 0, or choose another --output_dir"
        )
    if (output_dir / RUN_CONFIG_NAME).is_file():
        # killed before its first checkpoint (a failure that raises cleans up; a kill cannot): nothing to lose
        logger.warning(
            f"--resume: {output_dir} holds a run that stopped before its first checkpoint; it starts again from "
            "step 0 (with the tokenizer it saved)"
        )
        return None
    raise ValueError(f"--resume: no checkpoint-* folder in {output_dir} to resume from")


@contextlib.contextmanager
def _removed_if_failed(output_dir, fresh, main_process):
    """Around a fresh run's first writes and training: if it fails (an error, Ctrl-C) before a complete checkpoint
    exists, remove what it wrote in `output_dir` (the folder too if it made it). The run could not be resumed
    anyway, and the folder no longer blocks the same command. A fresh run starts on an empty folder, so everything
    in it is the run's own."""
    created = not output_dir.exists()
    try:
        yield
    except BaseException:
        if fresh and main_process and output_dir.is_dir() and newest_complete_checkpoint(output_dir)[0] is None:
            logger.warning(
                f"the run failed before its first complete checkpoint: removing what it wrote in {output_dir}"
            )
            if created:
                shutil.rmtree(output_dir, ignore_errors=True)
            else:
                for path in output_dir.iterdir():
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise


def evaluate_folder(folder, **options):
    """The results of `evaluate_and_record` (which says where they were written)."""
    return evaluate_and_record(folder, **options)[0]


def evaluate_and_record(folder, batch_size=16, run_dir=None, write=True, output=None, **options):
    """`hf-models evaluate`: a run folder (its train_config.yaml says the data) or an exported model folder.

    The task of the folder's model (its config.json `architectures`) evaluates it; `options` are that task's
    `evaluate_options` (None = the run's own data), and an option of another task is refused naming it.
    `run_dir` is where train_config.yaml lies when `folder` is one of the run's checkpoints. Returns (results, the file
    they were written to or None).

    `output` (a JSON file) receives the results when given. Otherwise, with `write`, they go to
    `folder/eval_results.json` only when `folder` is a run evaluated on its own data (updating what training
    recorded there). An exported folder's eval_results.json is what its model card reports, and other data would
    make a run's file disagree with its training, so those evaluations are returned and not written."""
    folder = Path(folder)
    run_config = Path(run_dir or folder) / RUN_CONFIG_NAME
    recorded = (load_yaml(run_config) or {}) if run_config.exists() else {}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("data", {}), dict):
        raise ValueError(f"{run_config} does not hold a run configuration (a mapping with a data section)")
    data = dict(recorded.get("data", {}))
    options = {key: value for key, value in options.items() if value is not None}
    if output is not None:
        target = Path(output)
        if target.is_dir() or not target.parent.is_dir():
            raise ValueError(f"--output {output}: must name a file in an existing folder")
    checkpoint = newest_complete_checkpoint(folder)[0]
    if checkpoint is not None and not (folder / "config.json").exists():
        raise ValueError(
            f"{folder} holds no final model (its training did not finish); evaluate {checkpoint} with the data "
            "options, or `hf-models export` the run (it takes the newest complete checkpoint)"
        )
    check_model_folder(folder)
    task = task_of_folder(folder)
    foreign = sorted(set(options) - set(task.evaluate_options))
    if foreign:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in foreign)
        own = ", ".join(f"--{name.replace('_', '-')}" for name in task.evaluate_options) or "none"
        raise ValueError(f"{folder} holds a model of the task {task.name}: {flags} do not apply to it (its options: "
                         f"{own})")  # fmt: skip
    if output is None:
        target = folder / EVAL_RESULTS_NAME if write and recorded and task.own_data(data, options) else None
    results = task.evaluate_folder(folder, data, options, batch_size, recorded)
    if target is not None:
        _write_results(target, results, merge=target == folder / EVAL_RESULTS_NAME)
    return results, target


def _write_results(path, results, merge):
    """Write `results` as JSON through a temporary file renamed over `path` (never a half-written file); `merge`
    keeps what is already there beside the new metrics (training's global_step, world_size, precision)."""
    previous = {}
    if merge and path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON (line {error.lineno}: {error.msg}); nothing written") from None
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps({**previous, **results}, indent=2) + "\n", encoding="utf-8")
    staging.replace(path)


def check_model_folder(folder):
    """Refuse a folder whose model cannot load, naming the file: config.json must parse and the weights
    (model.safetensors or the shards of its index) must be complete."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"{folder} holds no model: {config.name} is missing")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config} is not valid JSON: {error}") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{folder} holds no model weights (model.safetensors)")
    for path in weights:
        if problem := safetensors_problem(path):
            raise ValueError(problem)
