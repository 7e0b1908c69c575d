"""`hf-models train` and `hf-models evaluate`: causal language models (a corpus through `datasets`, a tokenizer from
`tokenizers`) and image classifiers (images through `datasets`, the model's image processor), with
`transformers.Trainer` for the loop (progress bars, logging, checkpoints, resume)."""

import contextlib
import json
import math
import shutil
from pathlib import Path

import torch
import yaml
from datasets import load_dataset
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoTokenizer,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.utils import logging

from ..data import bpe_tokenizer, char_tokenizer, gpt2_tokenizer, load_text_files, load_text_splits, pack_blocks
from .arguments import load_yaml, resolve_path, resolved_config
from .checkpoints import newest_complete_checkpoint, resume_gaps, safetensors_problem


logger = logging.get_logger(__name__)


RUN_CONFIG_NAME = "train_config.yaml"
EVAL_RESULTS_NAME = "eval_results.json"
SAMPLES_NAME = "samples.jsonl"
SAMPLE_SEED = 1234


@torch.no_grad()
def generate_sample(model, tokenizer, prompt, max_new_tokens, seed=SAMPLE_SEED):
    """`prompt` + `max_new_tokens` sampled tokens (top-k 40, temperature 0.8), decoded. The sampling draws from a
    forked RNG seeded with `seed`: the same model gives the same sample, and the training randomness is untouched.
    The continuation stops where the model's positions (`max_position_embeddings`) end."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None:
        max_new_tokens = max(0, min(max_new_tokens, limit - inputs["input_ids"].shape[1]))
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            output = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=True,
                top_k=40,
                temperature=0.8,
                pad_token_id=tokenizer.pad_token_id,
            )
    finally:
        model.train(was_training)
    return tokenizer.decode(output[0], skip_special_tokens=True)


class SampleCallback(TrainerCallback):
    """Text runs: after every evaluation and at the end of training, generate a sample (`generate_sample`) from
    `sample_prompt`, print it and append {step, prompt, text} to samples.jsonl in the run folder (main process).
    A step that already has its sample (an evaluation at the last step) is not sampled again."""

    def __init__(self, tokenizer, prompt, max_new_tokens, output_dir):
        self.tokenizer, self.prompt, self.max_new_tokens = tokenizer, prompt, max_new_tokens
        self.path = Path(output_dir) / SAMPLES_NAME
        self.last_step = None

    def _sample(self, state, model):
        if model is None or state.global_step == self.last_step:
            return
        self.last_step = state.global_step
        # every process generates (a sharded FSDP / ZeRO-3 model needs them all in its forward); the same seed gives
        # them the same text, and the main process records it
        text = generate_sample(model, self.tokenizer, self.prompt, self.max_new_tokens)
        if not state.is_world_process_zero:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.global_step, "prompt": self.prompt, "text": text}) + "\n")
        tqdm.write(f"[sample at step {state.global_step}]\n{text}\n")

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._sample(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._sample(state, model)


def last_sample(folder):
    """The newest entry of `folder`/samples.jsonl, or None."""
    path = Path(folder) / SAMPLES_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return json.loads(lines[-1]) if lines else None


def load_splits(data_args):
    """`DatasetDict` with `train` and `validation` text: a local file (split by characters), a local train file with
    a held-out file (one row per line), or a Hub dataset."""
    if data_args.corpus is not None and data_args.validation_file is not None:
        return load_text_files(
            resolve_path(data_args.corpus),
            resolve_path(data_args.validation_file),
            num_proc=data_args.preprocessing_num_workers,
        )
    if data_args.corpus is not None:
        return load_text_splits(resolve_path(data_args.corpus), data_args.val_fraction)
    splits = load_dataset(data_args.dataset, data_args.dataset_config, num_proc=data_args.preprocessing_num_workers)
    if "validation" not in splits:
        raise ValueError(f"dataset {data_args.dataset!r} has no 'validation' split (splits: {list(splits)})")
    return splits


def build_tokenizer(data_args, splits, output_dir):
    """The run's tokenizer: the one already saved in `output_dir` (resume), else a new one trained on `train`."""
    if (Path(output_dir) / "tokenizer.json").exists():
        try:
            return AutoTokenizer.from_pretrained(output_dir)
        except Exception as error:  # a damaged file raises anything from JSON to Rust errors
            raise ValueError(
                f"the run's tokenizer in {output_dir} (tokenizer.json) cannot be loaded: {error}"
            ) from None
    if data_args.tokenizer == "gpt2":
        return gpt2_tokenizer(resolve_path(data_args.tiktoken_file) if data_args.tiktoken_file else None)
    texts = list(splits["train"]["text"])
    if data_args.tokenizer == "char":
        return char_tokenizer(texts + list(splits["validation"]["text"]))
    return bpe_tokenizer(texts, data_args.bpe_vocab_size)


def load_model_config(model_args, **fields):
    """The model config file with the run's overrides and `fields` applied, re-validated."""
    config = AutoConfig.from_pretrained(str(resolve_path(model_args.model_config)))
    for key, value in {**json.loads(model_args.model_overrides), **fields}.items():
        if not hasattr(config, key) and key not in fields:
            raise ValueError(f"model override {key!r} is not a field of {type(config).__name__}")
        setattr(config, key, value)
    return type(config)(**config.to_dict())


def build_model(model_args, tokenizer, block_size):
    config = load_model_config(model_args, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and block_size > limit:
        raise ValueError(f"data.block_size={block_size} is longer than the model's max_position_embeddings={limit}")
    return AutoModelForCausalLM.from_config(config)


def train(model_args, data_args, training_args, resume=False, callbacks=None):
    """Train, save the final model and tokenizer in `output_dir`, evaluate; returns the eval results.

    `resume` continues from the newest complete `checkpoint-*` in `output_dir` (weights, optimizer, scheduler, RNG
    and data position, so the loss curve continues without a gap), skipping newer ones a kill left unfinished. A
    fresh run refuses a non-empty `output_dir`, and if it fails before its first complete checkpoint it removes
    what it wrote, so the same command can run again.
    """
    output_dir = Path(training_args.output_dir)
    last_checkpoint = _check_output_dir(output_dir, resume, training_args.world_size)
    if data_args.image_dataset is not None:
        return _train_image_classifier(model_args, data_args, training_args, resume, last_checkpoint, callbacks)
    splits = load_splits(data_args)
    tokenizer = build_tokenizer(data_args, splits, output_dir)
    workers = data_args.preprocessing_num_workers
    train_blocks = pack_blocks(splits["train"], tokenizer, data_args.block_size, num_proc=workers)
    all_eval_blocks = pack_blocks(splits["validation"], tokenizer, data_args.block_size, num_proc=workers)
    eval_blocks = all_eval_blocks
    if data_args.max_eval_blocks and len(eval_blocks) > data_args.max_eval_blocks:
        eval_blocks = eval_blocks.select(range(data_args.max_eval_blocks))
    set_seed(training_args.seed)  # the initial weights are part of the run (Trainer only seeds its own loop)
    model = build_model(model_args, tokenizer, data_args.block_size)

    callbacks = list(callbacks or [])
    if training_args.sample_max_new_tokens > 0:
        callbacks.append(
            SampleCallback(tokenizer, training_args.sample_prompt, training_args.sample_max_new_tokens, output_dir)
        )
    trainer = _run_trainer(
        output_dir, tokenizer, (model_args, data_args, training_args), resume, last_checkpoint,
        model=model,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks if training_args.eval_strategy != "no" else None,
        callbacks=callbacks,
    )  # fmt: skip
    if not trainer.is_world_process_zero():
        return None
    results = evaluate_lm(
        trainer.model, tokenizer, all_eval_blocks, batch_size=training_args.per_device_eval_batch_size
    )
    return _finish_run(output_dir, trainer, training_args, results)


def _run_trainer(output_dir, preprocessor, arguments, resume, last_checkpoint, **trainer_kwargs):
    """Start the run folder, train with `Trainer(**trainer_kwargs)` (a fresh run that fails before its first complete
    checkpoint removes what it wrote), save the final model and state; returns the trainer, ready for the final
    evaluation in float32."""
    model_args, data_args, training_args = arguments
    with _removed_if_failed(output_dir, fresh=not resume, main_process=training_args.process_index == 0):
        _start_run(output_dir, preprocessor, model_args, data_args, training_args)
        trainer = Trainer(args=training_args, processing_class=preprocessor, **trainer_kwargs)
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


def _finish_run(output_dir, trainer, training_args, results):
    """Record the final results with the run's step count, world size and precision in eval_results.json."""
    results = {
        **results,
        "global_step": trainer.state.global_step,
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


def image_transform(processor, max_shift=0):
    """A `datasets.with_transform` function: PIL images -> `pixel_values` through the image processor, labels; with
    `max_shift`, each image first moves by a random offset of up to that many pixels (training augmentation)."""
    from ..data import random_shift

    def transform(batch):
        images = [random_shift(image, max_shift) for image in batch["image"]]
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.tensor(batch["label"])}

    return transform


def _first(split, count):
    """The first `count` examples of `split` (all of them when `count` is 0 or larger than the split)."""
    return split.select(range(count)) if count and count < len(split) else split


def _logit_metrics(metric, logits, labels):
    """Accuracy (through the `evaluate` module `metric`) and the plain mean cross-entropy of class logits (N, K)
    against labels (N,): what a training run's evaluations and `hf-models evaluate` both report."""
    logits, labels = torch.as_tensor(logits).float(), torch.as_tensor(labels).long()
    results = metric.compute(predictions=logits.argmax(-1), references=labels)
    return {**results, "cross_entropy": float(torch.nn.functional.cross_entropy(logits, labels))}


def accuracy_metrics():
    """`compute_metrics` for Trainer: `_logit_metrics` with the accuracy module shipped in hf_models (works offline);
    Trainer's own `eval_loss` is label-smoothed when training is, `eval_cross_entropy` never."""
    from ..metrics import load_metric

    metric = load_metric("accuracy")

    def compute(prediction):
        logits = prediction.predictions
        return _logit_metrics(metric, logits[0] if isinstance(logits, tuple) else logits, prediction.label_ids)

    return compute


def _train_image_classifier(model_args, data_args, training_args, resume, last_checkpoint, callbacks):
    """Image classification: a `DatasetDict` of {image, label} (MNIST IDX files or a Hub dataset), the model's
    image processor applied on the fly, accuracy per evaluation through `evaluate`; writes eval_results.json."""
    from ..data import image_processor_for, load_mnist

    output_dir = Path(training_args.output_dir)
    splits = load_mnist(resolve_path(data_args.image_dataset))
    if data_args.eval_split not in splits:
        raise ValueError(f"data.eval_split={data_args.eval_split!r} is not a split of {list(splits)}")
    names = splits["train"].features["label"].names
    set_seed(training_args.seed)
    config = load_model_config(
        model_args,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    model = AutoModelForImageClassification.from_config(config)
    processor = image_processor_for(config)
    evaluated = _first(splits[data_args.eval_split], data_args.max_eval_samples)
    train_split = splits["train"].with_transform(image_transform(processor, data_args.random_shift))
    eval_split = evaluated.with_transform(image_transform(processor))
    training_args.remove_unused_columns = False  # the transform needs the raw image/label columns
    trainer = _run_trainer(
        output_dir, processor, (model_args, data_args, training_args), resume, last_checkpoint,
        model=model,
        train_dataset=train_split,
        eval_dataset=eval_split,
        compute_metrics=accuracy_metrics(),
        callbacks=callbacks,
    )  # fmt: skip
    results = trainer.evaluate(eval_split)
    if not trainer.is_world_process_zero():
        return None
    results = {key: float(value) for key, value in results.items()}
    results.update(eval_split=data_args.eval_split, eval_examples=len(eval_split))
    return _finish_run(output_dir, trainer, training_args, results)


@torch.no_grad()
def evaluate_image_folder(folder, data, batch_size=256, label_smoothing=0.0):
    """Accuracy (through `evaluate`) and mean cross-entropy of an image classifier folder on the run's eval split:
    `eval_cross_entropy` plain, `eval_loss` with the run's `label_smoothing` (Trainer's `eval_loss` for that run)."""
    from transformers import AutoImageProcessor

    from ..data import load_mnist
    from ..metrics import load_metric

    split_name, count = data.get("eval_split", "test"), data.get("max_eval_samples", 0)
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"max_eval_samples must be a count >= 0 (0: the whole split), got {count!r}")
    splits = load_mnist(resolve_path(data["image_dataset"]))
    if split_name not in splits:
        raise ValueError(f"eval_split {split_name!r} is not a split of {data['image_dataset']}: {sorted(splits)}")
    split = _first(splits[split_name], count)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    transform = image_transform(AutoImageProcessor.from_pretrained(folder))
    logits, labels = [], []
    for start in range(0, len(split), batch_size):
        batch = transform(split[start : start + batch_size])
        logits.append(model(pixel_values=batch["pixel_values"]).logits.float())
        labels.append(batch["labels"])
    logits, labels = torch.cat(logits), torch.cat(labels)
    results = {f"eval_{k}": v for k, v in _logit_metrics(load_metric("accuracy"), logits, labels).items()}
    results.update(
        eval_loss=float(torch.nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)),
        eval_split=split_name,
        eval_examples=len(split),
    )
    return results


@torch.no_grad()
def evaluate_lm(model, tokenizer, blocks, batch_size=16):
    """Validation loss (nats per token), perplexity and bits per character over `blocks` (a `pack_blocks` dataset).

    Bits per character divide the total loss by the characters the predicted tokens decode to, so char and BPE
    models compare on the same scale.
    """
    blocks = blocks["input_ids"]  # a `pack_blocks` dataset of the held-out text
    model.eval()
    device = next(model.parameters()).device
    total_nats, total_tokens, total_chars = 0.0, 0, 0
    for start in range(0, len(blocks), batch_size):
        ids = torch.tensor(blocks[start : start + batch_size], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        targets = ids[:, 1:]
        nats = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total_nats += float(nats)
        total_tokens += targets.numel()
        total_chars += sum(len(text) for text in tokenizer.batch_decode(targets.tolist()))
    loss = total_nats / total_tokens
    return {
        "eval_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": total_nats / (total_chars * math.log(2)),
        "eval_tokens": total_tokens,
        "eval_characters": total_chars,
    }


def evaluate_folder(folder, **options):
    """The results of `evaluate_and_record` (which says where they were written)."""
    return evaluate_and_record(folder, **options)[0]


def evaluate_and_record(
    folder,
    corpus=None,
    block_size=None,
    batch_size=16,
    run_dir=None,
    write=True,
    image_dataset=None,
    eval_split=None,
    max_eval_samples=None,
    output=None,
):
    """`hf-models evaluate`: a run folder (its train_config.yaml says the data) or an exported model folder.

    Text models: `corpus` is a held-out text file (default: the run's own validation split). Image classifiers
    (recognised by their config's architecture): `image_dataset` (an MNIST folder or Hub dataset id), `eval_split`
    and `max_eval_samples` default to the run's own; an exported folder has no run to default to, so it needs
    `image_dataset`. `run_dir` is where train_config.yaml lies when `folder` is one of the run's checkpoints.
    Returns (results, the file they were written to or None).

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
    given = {"image_dataset": image_dataset, "eval_split": eval_split, "max_eval_samples": max_eval_samples}
    image_options = {key: value for key, value in given.items() if value is not None}
    if output is not None:
        target = Path(output)
        if target.is_dir() or not target.parent.is_dir():
            raise ValueError(f"--output {output}: must name a file in an existing folder")
    elif write and recorded and _own_data(data, corpus, block_size, image_options):
        target = folder / EVAL_RESULTS_NAME
    else:
        target = None
    checkpoint = newest_complete_checkpoint(folder)[0]
    if checkpoint is not None and not (folder / "config.json").exists():
        raise ValueError(
            f"{folder} holds no final model (its training did not finish); evaluate {checkpoint} with --corpus or "
            "--image-dataset, or `hf-models export` the run (it takes the newest complete checkpoint)"
        )
    check_model_folder(folder)
    if _is_image_classifier(folder, data):
        if corpus is not None:
            raise ValueError(f"{folder} holds an image classifier; --corpus is for text models, use --image-dataset")
        data.update(image_options)
        if not data.get("image_dataset"):
            raise ValueError(
                f"{folder} holds an image classifier and no {RUN_CONFIG_NAME} naming its data; pass --image-dataset "
                "(an MNIST folder of IDX files or a Hub dataset id)"
            )
        smoothing = recorded.get("training", {}).get("label_smoothing_factor", 0.0)
        results = evaluate_image_folder(folder, data, batch_size=max(batch_size, 256), label_smoothing=smoothing)
    else:
        if image_options:
            raise ValueError(f"{folder} holds a text model; {sorted(image_options)} apply to image classifiers only")
        results = _evaluate_text_folder(folder, data, corpus, block_size, batch_size)
    if target is not None:
        _write_results(target, results, merge=target == folder / EVAL_RESULTS_NAME)
    return results, target


def _own_data(data, corpus, block_size, image_options):
    """Whether the options (None = the run's own) evaluate what the run's `data` section evaluates."""
    if corpus is not None:
        own = data.get("validation_file")
        if own is None or resolve_path(corpus).resolve() != resolve_path(own).resolve():
            return False
    if block_size is not None and block_size != data.get("block_size"):
        return False
    defaults = {"eval_split": "test", "max_eval_samples": 0}
    return all(value == data.get(key, defaults.get(key)) for key, value in image_options.items())


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


def _is_image_classifier(folder, data):
    """A run that trained on images, or a model folder whose config names an image-classification architecture."""
    if data.get("image_dataset"):
        return True
    config = folder / "config.json"
    if not config.exists():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(name.endswith("ForImageClassification") for name in architectures)


def _evaluate_text_folder(folder, data, corpus, block_size, batch_size):
    held_out = corpus if corpus is not None else data.get("validation_file")
    if held_out is not None and not resolve_path(held_out).is_file():
        origin = "--corpus" if corpus is not None else f"the run's data.validation_file (in {RUN_CONFIG_NAME})"
        raise ValueError(f"{origin} {held_out}: file not found")
    if held_out is None and data.get("corpus") and not resolve_path(data["corpus"]).is_file():
        raise ValueError(
            f"the run's data.corpus (in {RUN_CONFIG_NAME}) {data['corpus']}: file not found; pass --corpus"
        )
    if held_out is not None:  # an explicit held-out file is evaluated whole
        text = load_dataset("text", data_files=str(resolve_path(held_out)), sample_by="document", split="train")
    elif data.get("corpus"):  # the run's own validation split
        text = load_text_splits(resolve_path(data["corpus"]), data.get("val_fraction", 0.1))["validation"]
    else:
        raise ValueError(
            f"{folder} has no {RUN_CONFIG_NAME} naming its corpus; pass --corpus with a held-out text file"
        )
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    block_size = block_size or data.get("block_size") or model.config.max_position_embeddings
    return evaluate_lm(model, tokenizer, pack_blocks(text, tokenizer, block_size), batch_size)
