"""`hf-models export` and `hf-models push`: a training run -> a Hub-ready folder with a generated model card."""

import contextlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import transformers
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.utils import logging

from ..resources import cards_dir
from ..tasks import task_of_folder
from ..tasks.base import config_number
from ..training.arguments import RUN_CONFIG_NAME, load_yaml
from ..training.checkpoints import newest_complete_checkpoint
from ..training.run import check_model_folder, evaluate_folder
from .remote_code import IN_PROGRESS_NAME, PARTIAL_SUFFIX, audit_folder


try:
    import fcntl
except ImportError:  # Windows: the partial folder's creation alone keeps a second export out
    fcntl = None

logger = logging.get_logger(__name__)

CARDS = cards_dir()  # model_cards/: the packaged copy in a wheel install, else the checkout's
# An export is written into `<out_dir>.partial` (holding this marker file) and renamed to `out_dir` when complete:
# a folder with the suffix or the marker is an unfinished export.


def _source_folder(run_dir):
    """The run's final model (output_dir itself), else its newest complete checkpoint (unfinished newer ones, from
    a kill while a checkpoint was written, are skipped with a warning)."""
    run_dir = Path(run_dir)
    if (run_dir / "model.safetensors").exists() or (run_dir / "model.safetensors.index.json").exists():
        check_model_folder(run_dir)
        return run_dir
    checkpoint, skipped = newest_complete_checkpoint(run_dir)
    if checkpoint is None and skipped:
        listing = "\n".join(f"  {folder.name}: {'; '.join(problems)}" for folder, problems in skipped)
        raise ValueError(f"{run_dir} holds no model (model.safetensors) and no complete checkpoint:\n{listing}")
    if checkpoint is None:
        raise ValueError(f"{run_dir} holds no model (model.safetensors) and no checkpoint-* folder")
    for folder, problems in skipped:
        logger.warning(f"export: skipping {folder.name}, which is incomplete: {'; '.join(problems)}")
    return checkpoint


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


@contextlib.contextmanager
def _staging_folder(out_dir, run_dir):
    """`<out_dir>.partial`, held for this export alone: created with `mkdir` and locked with `flock` while the export
    writes into it, removed if the export fails. A second export to the same target finds the lock taken and stops
    with a ValueError; a partial folder whose lock is free was left by a killed export and is emptied for reuse."""
    staging = out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)
    try:
        staging.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    handle = os.open(staging, os.O_RDONLY) if fcntl is not None else None  # a folder opens for reading on POSIX
    try:
        if fcntl is not None:
            try:
                # released when the handle closes, also when the process is killed
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(
                    f"another export to {out_dir} is in progress (it holds {staging}); wait for it to finish or "
                    "export to another folder"
                ) from None
        elif not created:
            raise ValueError(
                f"{staging} exists: another export to {out_dir} is running or was interrupted; remove {staging} "
                "if none is running"
            )
        if not created:
            contents = list(staging.iterdir())
            if contents and not (staging / IN_PROGRESS_NAME).exists():
                raise ValueError(f"{staging} exists and was not written by `hf-models export`: remove or rename it")
            if contents:
                logger.warning(f"export: replacing {staging}, left unfinished by an interrupted export")
            for path in contents:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        (staging / IN_PROGRESS_NAME).write_text(
            f"unfinished export of {run_dir} by process {os.getpid()} on {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
        )
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        if handle is not None:
            os.close(handle)


def training_curve(log_history, path, loss_label="loss (nats/token)"):
    """PNG of the training loss (and eval loss where logged) against the step, labelled `loss_label`; evaluated
    accuracy (an image classifier's `eval_accuracy`) on a second axis where the run logged it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(log["step"], log["loss"]) for log in log_history if "loss" in log]
    evals = [(log["step"], log["eval_loss"]) for log in log_history if "eval_loss" in log]
    accuracy = [(log["step"], log["eval_accuracy"]) for log in log_history if "eval_accuracy" in log]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    if train:
        axis.plot([step for step, _ in train], [loss for _, loss in train], label="train loss")
    if evals:
        axis.plot([step for step, _ in evals], [loss for _, loss in evals], marker="o", label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel(loss_label)
    axis.grid(alpha=0.3)
    handles, labels = axis.get_legend_handles_labels()
    if accuracy:
        right = axis.twinx()
        right.plot([step for step, _ in accuracy], [value for _, value in accuracy], marker="s", color="tab:green",
                   label="validation accuracy")  # fmt: skip
        right.set_ylabel("accuracy")
        right.set_ylim(0, 1)
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        axis.legend(handles, labels, loc="center right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return labels


def _card_facts(model_type):
    name = model_type.removeprefix("hfm_")
    path = CARDS / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"no model card facts for {model_type}: {path} is missing")
    return name, yaml.safe_load(path.read_text())


def build_card(model, preprocessor, run_config, results, repo_id, license="apache-2.0", sample=None, task=None,
               figures=()):  # fmt: skip
    """The model card: metadata (incl. a model-index with the measured results) and the body from the template; the
    task (`task`, else read from the model's config) gives its data, metrics and usage snippets. `preprocessor` is
    the model's tokenizer or processor; `sample` is the run's last generated sample ({step, prompt, text}), shown under
    the results; `figures` ([{file, alt, caption}], from the task) are shown under the training curve."""
    from ..tasks import task_for_config

    task = task or task_for_config(model.config)
    name, facts = _card_facts(model.config.model_type)
    data = run_config.get("data", {})
    training = run_config.get("training", {})
    fields = task.card_fields(model, preprocessor, data, training, results)
    eval_results = [
        EvalResult(task_type=task.pipeline_tag, dataset_type=fields["dataset_type"], dataset_name=fields["dataset_name"],
                   dataset_split=fields["split"], metric_type=metric, metric_name=label, metric_value=round(value, 4))
        for metric, label, value in fields["metrics"]
    ]  # fmt: skip
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=task.pipeline_tag,
        license=license,
        tags=sorted(set(facts.get("tags", [])) | {"custom_code", name}),
        datasets=[fields["hub_dataset"]] if fields.get("hub_dataset") else None,
        model_name=Path(repo_id).name,
        eval_results=eval_results,
    )
    length = (
        f"{training.get('max_steps')} steps"
        if (training.get("max_steps") or -1) > 0
        else f"{config_number(training.get('num_train_epochs'))} epochs"
    )
    clip = training.get("max_grad_norm")
    clipping = f"gradient clipping {config_number(clip)}" if clip else "no gradient clipping"
    recipe = (
        f"{length} of `transformers.Trainer`, batch {training.get('per_device_train_batch_size')} "
        f"{fields['batch_unit']}, learning rate {config_number(training.get('learning_rate'))} "
        f"({training.get('lr_scheduler_type')}, {config_number(training.get('warmup_steps'))} warmup steps), "
        f"optimizer {training.get('optim')} (betas {config_number(training.get('adam_beta1'))}, "
        f"{config_number(training.get('adam_beta2'))}), weight decay {config_number(training.get('weight_decay'))}, "
        f"{clipping}, bf16 {training.get('bf16')}"
    )
    if training.get("label_smoothing_factor"):
        recipe += f", label smoothing {config_number(training['label_smoothing_factor'])}"
    if training.get("ema_decay"):
        recipe += f", the weights' exponential moving average (decay {config_number(training['ema_decay'])})"
    for note in task.recipe_notes(model, data):
        recipe += f"; {note}"
    return ModelCard.from_template(
        card_data,
        template_path=str(CARDS / "template.md"),
        title=f"{facts['name']} trained on {fields['dataset_name']}",
        summary=facts["summary"],
        model_type=model.config.model_type,
        arch_name=facts["name"],
        num_parameters=f"{model.num_parameters():,}",
        reference_code=facts.get("reference_code", ""),
        results_table=[
            {"split": fields["split"], "metric": label, "value": f"{value:.4f}"}
            for _, label, value in fields["metrics"]
        ],
        recipe=recipe,
        repo_id=repo_id,
        deviations=facts.get("deviations_from_reference", []),
        limitations=facts.get("limitations", []),
        citation=facts.get("citation", ""),
        sample=sample,
        figures=list(figures),
        sample_prompt_literal=json.dumps(sample["prompt"])[1:-1] if sample else "",
        **{k: v for k, v in fields.items() if k not in ("metrics", "hub_dataset", "usage")},
        task=task.name,
        usage=fields["usage"].replace("{repo_id}", repo_id),
    )


def export(run_dir, out_dir, repo_id=None):
    """Write a Hub-ready folder: weights (safetensors), shipped code, config with auto_map, tokenizer and generation
    config (text) or image processor (images), eval_results.json, training_curve.png and README.md (the card).
    Refuses a non-empty `out_dir`. Everything is read and checked first; the folder is then written as
    `<out_dir>.partial` (see `_staging_folder`; a second export to the same target stops) and renamed to `out_dir`
    when complete and audited, so `out_dir` never holds a partial export."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"export folder {out_dir} is not empty; choose a new folder (nothing is overwritten)")
    source = _source_folder(run_dir)
    run_config_path = run_dir / RUN_CONFIG_NAME
    if not run_config_path.exists():
        raise ValueError(f"{run_dir} has no train_config.yaml: export takes a folder written by `hf-models train`")
    run_config = load_yaml(run_config_path)
    if not isinstance(run_config, dict):
        raise ValueError(f"{run_config_path} does not hold a run configuration (a mapping with model/data/training)")
    task = task_of_folder(source)
    model = getattr(transformers, task.auto_class).from_pretrained(source)
    preprocessor = task.load_preprocessor(source, run_dir)
    results_path = run_dir / "eval_results.json"
    if source != run_dir or not results_path.exists():
        # a checkpoint: measure it now (the run's files stay as they are)
        results = evaluate_folder(source, run_dir=run_dir, write=False)
    else:
        results = _read_json(results_path)
    state_path = next((p for p in (source / "trainer_state.json", run_dir / "trainer_state.json") if p.exists()), None)
    log_history = _read_json(state_path).get("log_history", []) if state_path else []

    with _staging_folder(out_dir, run_dir) as staging:
        if out_dir.exists() and any(out_dir.iterdir()):  # filled while this export prepared
            raise ValueError(f"export folder {out_dir} is not empty; choose a new folder (nothing is overwritten)")
        _write_export(staging, out_dir, run_dir, source, model, preprocessor, task, run_config, results, log_history,
                      repo_id)  # fmt: skip
        try:
            os.rename(staging, out_dir)  # atomic: the folder appears complete or not at all (replaces an empty one)
        except OSError as error:
            raise ValueError(f"export folder {out_dir} cannot be replaced ({error}); nothing is overwritten") from None
    return out_dir


def _write_export(staging, out_dir, run_dir, source, model, preprocessor, task, run_config, results, log_history,
                  repo_id):  # fmt: skip
    task.prepare_export(model, preprocessor, run_config.get("training", {}))
    model.save_pretrained(staging)
    preprocessor.save_pretrained(staging)
    (staging / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    training_curve(log_history, staging / "training_curve.png", loss_label=task.loss_label)
    card_repo = repo_id or str(out_dir.resolve())
    sample = task.export_sample(run_dir) if source == run_dir else None  # a checkpoint's sample is not known
    figures = task.figures(model, staging, run_config.get("data") or {})
    card = build_card(model, preprocessor, run_config, results, card_repo, sample=sample, task=task, figures=figures)
    card.save(staging / "README.md")
    (staging / IN_PROGRESS_NAME).unlink()  # written in full: audited as it will be published
    problems = audit_folder(staging, ("AutoModel", task.auto_class), staging=True)
    if problems:
        raise ValueError("the export fails the remote-code audit:\n" + "\n".join(problems))


def push(folder, repo_id, private=False, revision=None, token=None):
    """Upload an exported folder with huggingface_hub (create_repo + upload_folder). Offline or without a token it
    fails with a clear message before changing anything."""
    folder = Path(folder)
    if not (folder / "README.md").exists() or not (folder / "config.json").exists():
        raise ValueError(f"{folder} is not an exported model folder (README.md and config.json expected)")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ValueError("HF_HUB_OFFLINE is set: the Hub cannot be reached, nothing was uploaded")
    api = HfApi(token=token)
    if api.token is None:
        from huggingface_hub import get_token

        if get_token() is None:
            raise ValueError("no Hugging Face token: run `hf auth login` or set HF_TOKEN; nothing was uploaded")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=revision,
                                   commit_message="Upload with hf-models push")  # fmt: skip
    except _hub_errors() as error:
        # upload_folder is one commit: when it fails, nothing of the folder reached the repository
        raise ValueError(
            f"upload to {repo_id} at {api.endpoint} failed ({type(error).__name__}: {error}); nothing was uploaded"
        ) from None
    return commit


def _hub_errors():
    """What a failed Hub call raises: huggingface_hub's HTTP errors are OSErrors, but a connection that never
    opens raises the HTTP client's own error (httpx's ConnectError), which is not; huggingface_hub >= 1.0 exposes
    that client's base class as `huggingface_hub.errors.HTTPError`."""
    from huggingface_hub import errors

    client_error = getattr(errors, "HTTPError", None)
    return (OSError, client_error) if isinstance(client_error, type) else (OSError,)
