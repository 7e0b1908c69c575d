"""`hf-models export` and `hf-models push`: a training run -> a Hub-ready folder with a generated model card."""

import json
import os
import shutil
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.trainer_utils import get_last_checkpoint

from .remote_code import audit_folder


CARDS = Path(__file__).resolve().parents[2] / "model_cards"
PROMPT = "ROMEO:\n"


def _source_folder(run_dir):
    """The run's final model (output_dir itself), else its newest checkpoint."""
    run_dir = Path(run_dir)
    if (run_dir / "model.safetensors").exists() or (run_dir / "model.safetensors.index.json").exists():
        return run_dir
    checkpoint = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if checkpoint is None:
        raise ValueError(f"{run_dir} holds no model (model.safetensors) and no checkpoint-* folder")
    return Path(checkpoint)


def training_curve(log_history, path):
    """PNG of the training loss (and eval loss where logged) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(log["step"], log["loss"]) for log in log_history if "loss" in log]
    evals = [(log["step"], log["eval_loss"]) for log in log_history if "eval_loss" in log]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=120)
    if train:
        axis.plot([step for step, _ in train], [loss for _, loss in train], label="train loss")
    if evals:
        axis.plot([step for step, _ in evals], [loss for _, loss in evals], marker="o", label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats/token)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _card_facts(model_type):
    name = model_type.removeprefix("hfm_")
    path = CARDS / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"no model card facts for {model_type}: {path} is missing")
    return name, yaml.safe_load(path.read_text())


def build_card(model, tokenizer, run_config, results, repo_id, license="apache-2.0"):
    """The model card: metadata (incl. a model-index with the measured results) and the body from the template."""
    name, facts = _card_facts(model.config.model_type)
    data = run_config.get("data", {})
    training = run_config.get("training", {})
    dataset_name = Path(data["corpus"]).stem if data.get("corpus") else data.get("dataset", "unknown")
    dataset_type = data.get("dataset") or dataset_name
    metrics = [("loss", "Validation loss (nats/token)", results["eval_loss"]),
               ("perplexity", "Perplexity", results["perplexity"]),
               ("bits_per_character", "Bits per character", results["bits_per_character"])]  # fmt: skip
    eval_results = [
        EvalResult(task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset_name,
                   dataset_split="validation", metric_type=metric, metric_name=label, metric_value=round(value, 4))
        for metric, label, value in metrics
    ]  # fmt: skip
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=facts.get("pipeline_tag", "text-generation"),
        license=license,
        tags=sorted(set(facts.get("tags", [])) | {"custom_code", name}),
        datasets=[data["dataset"]] if data.get("dataset") else None,
        model_name=Path(repo_id).name,
        eval_results=eval_results,
    )
    recipe = (
        f"{training.get('max_steps')} steps of `transformers.Trainer`, batch {training.get('per_device_train_batch_size')} "
        f"x {data.get('block_size')} tokens, learning rate {training.get('learning_rate')} "
        f"({training.get('lr_scheduler_type')}, {training.get('warmup_steps')} warmup steps), "
        f"weight decay {training.get('weight_decay')}, gradient clipping {training.get('max_grad_norm')}, "
        f"bf16 {training.get('bf16')}"
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(CARDS / "template.md"),
        title=f"{facts['name']} trained on {dataset_name}",
        summary=facts["summary"],
        model_type=model.config.model_type,
        arch_name=facts["name"],
        num_parameters=f"{model.num_parameters():,}",
        reference_code=facts.get("reference_code", ""),
        results_table=[
            {"split": "validation", "metric": label, "value": f"{value:.4f}"} for _, label, value in metrics
        ],
        data_description=f"{dataset_name} ({data.get('tokenizer')} tokens, validation = "
        + (
            f"the held-out file {Path(data['validation_file']).name})"
            if data.get("validation_file")
            else f"the last {data.get('val_fraction')} of the text)"
            if data.get("corpus")
            else "its validation split)"
        ),
        tokenizer_description=f"{data.get('tokenizer')}, {len(tokenizer)} entries",
        recipe=recipe,
        repo_id=repo_id,
        prompt_literal=json.dumps(PROMPT)[1:-1],
        # the snippets must run as written: prompt + new tokens stay within the model's positions
        sample_tokens=min(
            60, getattr(model.config, "max_position_embeddings", 10**9) - len(tokenizer(PROMPT)["input_ids"])
        ),
        deviations=facts.get("deviations_from_reference", []),
        limitations=facts.get("limitations", []),
        citation=facts.get("citation", ""),
    )


def export(run_dir, out_dir, repo_id=None):
    """Write a Hub-ready folder: weights (safetensors), shipped code, config with auto_map, tokenizer, generation
    config, eval_results.json, training_curve.png and README.md (the card). Refuses a non-empty `out_dir`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"export folder {out_dir} is not empty; choose a new folder (nothing is overwritten)")
    source = _source_folder(run_dir)
    run_config_path = run_dir / "train_config.yaml"
    if not run_config_path.exists():
        raise ValueError(f"{run_dir} has no train_config.yaml: export takes a folder written by `hf-models train`")
    run_config = yaml.safe_load(run_config_path.read_text())
    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source if (source / "tokenizer.json").exists() else run_dir)
    results_path = run_dir / "eval_results.json"
    if source != run_dir or not results_path.exists():
        from ..training.run import evaluate_folder  # a checkpoint: measure it now

        results = evaluate_folder(source, run_dir=run_dir, write=False)  # the run's files stay as they are
    else:
        results = json.loads(results_path.read_text())
    state_path = next((p for p in (source / "trainer_state.json", run_dir / "trainer_state.json") if p.exists()), None)
    log_history = json.loads(state_path.read_text())["log_history"] if state_path else []

    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        max_length=getattr(model.config, "max_position_embeddings", None),
        do_sample=True,
        top_k=40,
        temperature=0.8,
    )
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    training_curve(log_history, staging / "training_curve.png")
    card_repo = repo_id or str(out_dir.resolve())
    build_card(model, tokenizer, run_config, results, card_repo).save(staging / "README.md")
    problems = audit_folder(staging, ("AutoModel", "AutoModelForCausalLM"))
    if problems:
        shutil.rmtree(staging)
        raise ValueError("the export fails the remote-code audit:\n" + "\n".join(problems))
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)  # the folder appears complete or not at all
    return out_dir


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
    except OSError as error:  # connection errors and HTTP errors are OSErrors in huggingface_hub
        raise ValueError(f"upload to {repo_id} failed: {error}") from None
    return commit
