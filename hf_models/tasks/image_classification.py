"""The image classification task: {image, label} examples (MNIST IDX files or a Hub dataset) through `datasets`, the
model's image processor applied on the fly, accuracy through `evaluate` and plain cross-entropy,
`image-classification`."""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification, set_seed

from ..data import image_processor_for, load_mnist, random_shift
from ..data.sources import hub_dataset_of
from ..training.arguments import resolve_path
from .base import Task, config_number, local_source, saved_folder


USAGE = """```python
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification

repo_id = "{repo_id}"
model = AutoModelForImageClassification.from_pretrained(repo_id, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained(repo_id)
image = Image.new("{mode}", ({size}, {size}))  # your image here
logits = model(**processor(images=image, return_tensors="pt")).logits
print(model.config.id2label[int(logits.argmax(-1))])
```

```python
from PIL import Image
from transformers import pipeline

repo_id = "{repo_id}"
classifier = pipeline("image-classification", model=repo_id, trust_remote_code=True)
print(classifier(Image.new("{mode}", ({size}, {size})), top_k=3))
```
"""


@dataclass
class ImageDataArguments:
    """The `data:` section of an image classification run."""

    image_dataset: str | None = field(
        default=None, metadata={"help": "a folder of MNIST IDX files or a Hub id with image/label columns"}
    )
    eval_split: str = field(default="test", metadata={"help": "the split evaluated (accuracy)"})
    random_shift: int = field(
        default=0, metadata={"help": "move each training image by up to N pixels along each axis (0 = off)"}
    )
    max_eval_samples: int = field(default=0, metadata={"help": "evaluate the first N images (0 = all)"})


def image_transform(processor, max_shift=0):
    """A `datasets.with_transform` function: PIL images -> `pixel_values` through the image processor, labels; with
    `max_shift`, each image first moves by a random offset of up to that many pixels (training augmentation)."""

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


class ImageClassificationTask(Task):
    name = "image_classification"
    auto_class = "AutoModelForImageClassification"
    architecture_suffix = "ForImageClassification"
    pipeline_tag = "image-classification"
    loss_label = "cross-entropy loss"
    data_arguments = ImageDataArguments
    evaluate_options = {
        "image_dataset": "image classifiers: an MNIST folder of IDX files or a Hub dataset id (default: the run's)",
        "eval_split": "image classifiers: the split to evaluate (default: the run's, or test)",
        "max_eval_samples": "image classifiers: the first N examples only (default: the run's, or all)",
    }
    _defaults = {"eval_split": "test", "max_eval_samples": 0}

    def check_data(self, data_args):
        if data_args.image_dataset is None:
            raise ValueError("data.image_dataset is missing: an image classifier trains on images (an MNIST folder "
                             "of IDX files or a Hub dataset id with image/label columns)")  # fmt: skip
        if data_args.random_shift < 0:
            raise ValueError(f"data.random_shift={data_args.random_shift} is invalid: must be >= 0 pixels")
        if data_args.max_eval_samples < 0:
            raise ValueError(f"data.max_eval_samples={data_args.max_eval_samples} is invalid: must be >= 0 (0 = all)")

    def train(self, model_args, data_args, training_args, run):
        splits = load_mnist(resolve_path(data_args.image_dataset))
        if data_args.eval_split not in splits:
            raise ValueError(f"data.eval_split={data_args.eval_split!r} is not a split of {list(splits)}")
        names = splits["train"].features["label"].names
        set_seed(training_args.seed)
        config = run.model_config(
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
        trainer = run.trainer(
            processor,
            model=model,
            train_dataset=train_split,
            eval_dataset=eval_split,
            compute_metrics=accuracy_metrics(),
            callbacks=list(run.callbacks),
        )
        results = trainer.evaluate(eval_split)
        if not trainer.is_world_process_zero():
            return None
        results = {key: float(value) for key, value in results.items()}
        results.update(eval_split=data_args.eval_split, eval_examples=len(eval_split))
        return results

    @torch.no_grad()
    def evaluate_folder(self, folder, data, options, batch_size, recorded):
        """Accuracy (through `evaluate`) and mean cross-entropy on the run's eval split: `eval_cross_entropy` plain,
        `eval_loss` with the run's `label_smoothing_factor` (Trainer's `eval_loss` for that run)."""
        from ..metrics import load_metric

        data = {**data, **options}
        if not data.get("image_dataset"):
            raise ValueError(f"{folder} holds an image classifier and no train_config.yaml naming its data; pass "
                             "--image-dataset (an MNIST folder of IDX files or a Hub dataset id)")  # fmt: skip
        smoothing = (recorded.get("training") or {}).get("label_smoothing_factor", 0.0)
        batch_size = max(batch_size, 256)
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
            eval_loss=float(torch.nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)),
            eval_split=split_name,
            eval_examples=len(split),
        )
        return results

    def load_preprocessor(self, source, run_dir):
        return AutoImageProcessor.from_pretrained(saved_folder(source, run_dir, "preprocessor_config.json"))

    def run_pipeline(self, folder, inputs, top_k=1, timeout=600):
        """`inputs`: PIL images; the outputs: per image its `top_k` [{label, score}]; `info` also names the image
        processor class the pipeline loaded."""
        from ..hub.remote_code import run_isolated_image_pipeline

        return run_isolated_image_pipeline(folder, inputs, top_k=top_k, timeout=timeout)

    def recipe_notes(self, model, data):
        notes = []
        mask_ratio = getattr(model.config, "mask_ratio", 0.0) or 0.0
        if mask_ratio > 0:  # image models that drop patches in training (mHC's `mask_ratio`)
            notes.append(f"{config_number(mask_ratio)} of each training image's patches dropped at random")
        if data.get("random_shift"):
            shift = data["random_shift"]
            notes.append(f"each training image moved by a random offset of up to {shift} pixel{'s' * (shift != 1)} "
                         "per axis")  # fmt: skip
        return notes

    def card_fields(self, model, preprocessor, data, training, results):
        source = str(data.get("image_dataset", "unknown"))
        local = local_source(source, resolve_path)
        dataset_name = Path(source).name if local else source
        config = model.config
        mode = "L" if config.num_channels == 1 else "RGB"
        return {
            "dataset_name": dataset_name,
            "dataset_type": dataset_name if local else source,
            "hub_dataset": hub_dataset_of(resolve_path(source)) if local else source,
            "split": results.get("eval_split", "test"),
            "metrics": [
                ("accuracy", "Accuracy", results["eval_accuracy"]),
                # plain, also when training smoothed the labels (eval_loss is then the smoothed loss)
                ("loss", "Cross-entropy loss", results.get("eval_cross_entropy", results["eval_loss"])),
            ],  # fmt: skip
            "data_description": f"{dataset_name} ({results.get('eval_examples', '?')} "
            f"{results.get('eval_split', 'test')} images evaluated, {config.num_labels} classes)",
            "preprocessing_description": f"Image processor: `{type(preprocessor).__name__.removesuffix('Pil')}` "
            f"(resize to {config.image_size}x{config.image_size}, scale to [0, 1], normalise with mean "
            f"{preprocessor.image_mean} and std {preprocessor.image_std}; {config.num_channels} channel(s))",
            "batch_unit": "images",
            "usage": USAGE.replace("{mode}", mode).replace("{size}", str(config.image_size)),
        }
