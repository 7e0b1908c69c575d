"""The prompt classification task: a prompt of feature rows in, one binary label out (+1 / -1), on the
table-connectivity data (`hf_models/data/table_connectivity.py`) turned into features by the model's processor.

Positives are rare (about 7% at V=20, C=3, rho=0.5: a constant "not connected" scores 93% accuracy), so every report
gives balanced accuracy, F1 (of the positive class) and AUROC beside accuracy, through scikit-learn (offline)."""

import json
from dataclasses import dataclass, field

import torch
from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification, set_seed

from ..data.table_connectivity import check_task_arguments, table_connectivity
from .base import Task, saved_folder


USAGE = """```python
from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

repo_id = "{repo_id}"
model = AutoModelForSequenceClassification.from_pretrained(repo_id, trust_remote_code=True)
processor = AutoFeatureExtractor.from_pretrained(repo_id, trust_remote_code=True)
# your tables: each a list of {columns} column names (or ids); equal names are the same column
tables = {tables}
# is a table holding "{first}" connected, through shared columns, to one holding "{second}"?
query = {query}
inputs = processor(tables, query)
print(processor.post_process(model(**inputs).logits))  # [{'connected': ..., 'score': P(connected)}]
```
"""

PROMPT_TASKS = ("table_connectivity",)


@dataclass
class PromptDataArguments:
    """The `data:` section of a prompt classification run."""

    prompt_task: str = field(
        default="table_connectivity", metadata={"help": "the prompt generator (table_connectivity)"}
    )
    num_tables: int | None = field(default=None, metadata={"help": "V, tables per prompt (default: the model's)"})
    num_columns: int | None = field(default=None, metadata={"help": "C, columns per table (default: the model's)"})
    edge_probability: float = field(default=0.5, metadata={"help": "rho, the Erdős–Rényi edge probability"})
    num_train_examples: int = field(
        default=0, metadata={"help": "N distinct training prompts, shuffled every epoch (0: an endless stream)"}
    )
    balanced: bool = field(default=False, metadata={"help": "training labels +1 / -1 with probability 1/2 each"})
    data_seed_base: int = field(default=0, metadata={"help": "seed of the training prompts"})
    eval_examples: int = field(default=2000, metadata={"help": "prompts of the evaluation set"})
    eval_balanced: bool = field(default=False, metadata={"help": "a balanced evaluation set (default: natural rates)"})
    eval_seed: int = field(
        default=1, metadata={"help": "seed of the evaluation prompts (differs from the training's)"}
    )
    feature_seed: int = field(default=42, metadata={"help": "seed of the id -> feature vector map (the processor's)"})


def binary_metrics(scores, labels):
    """Accuracy, balanced accuracy, F1 of the positive class and AUROC of `scores` (logits, > 0: +1) against labels in
    {-1, +1}; AUROC is left out when the labels hold one class only (it is undefined)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    scores = torch.as_tensor(scores).float().reshape(-1).numpy()
    labels = torch.as_tensor(labels).reshape(-1).numpy()
    predictions = (scores > 0) * 2 - 1
    results = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, pos_label=1, zero_division=0.0)),
        "positive_rate": float((labels == 1).mean()),
    }
    if len(set(labels.tolist())) == 2:
        results["auroc"] = float(roc_auc_score(labels, scores))
    return results


def compute_binary_metrics(prediction):
    """`compute_metrics` for Trainer: `binary_metrics` of the evaluation's logits."""
    logits = prediction.predictions
    return binary_metrics(logits[0] if isinstance(logits, tuple) else logits, prediction.label_ids)


class PromptCollator:
    """A batch of {tables, query, label} examples -> the processor's `input_features` and `num_tables`, `labels`."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples):
        batch = self.processor([e["tables"] for e in examples], [e["query"] for e in examples])
        batch["labels"] = torch.tensor([float(e["label"]) for e in examples])
        return dict(batch)


def example_tables(num_columns):
    """Three tables of `num_columns` named columns, linked users -> orders -> products (the card's usage example)."""
    names = (["user_id", "name", "email"], ["order_id", "user_id", "total"], ["product_id", "order_id", "price"])
    return [(columns + [f"{columns[0].removesuffix('_id')}_extra_{i}" for i in range(num_columns)])[:num_columns]
            for columns in names]  # fmt: skip


def _list_literal(rows, width=119):
    """`rows` (lists of strings) as the source of a Python list, laid out as the code formatter lays it out: one row
    per line, each row on one line while it fits `width` (with the 4-space indent) and one item per line where not."""
    lines = ["["]
    for row in rows:
        flat = f"    {json.dumps(row)},"
        if len(flat) <= width:
            lines.append(flat)
        else:
            lines += ["    [", *(f"        {json.dumps(item)}," for item in row), "    ],"]
    return "\n".join([*lines, "]"])


def processor_for(config, feature_seed):
    from ..lowrank_icl import LowRankIclProcessor

    return LowRankIclProcessor(n_dims=config.n_dims, num_columns=config.num_columns, feature_seed=feature_seed)


def _dataset(data, num_tables, num_columns, eval_set):
    if eval_set:
        return table_connectivity(num_tables, num_columns, data["edge_probability"], data["eval_examples"],
                                  seed=data["eval_seed"], balanced=data["eval_balanced"])  # fmt: skip
    count = data["num_train_examples"]
    return table_connectivity(num_tables, num_columns, data["edge_probability"], count or 1, seed=data["data_seed_base"],
                              balanced=data["balanced"], streaming=count == 0)  # fmt: skip


class PromptClassificationTask(Task):
    name = "prompt_classification"
    auto_class = "AutoModelForSequenceClassification"
    architecture_suffix = "ForPromptClassification"
    pipeline_tag = "tabular-classification"
    loss_label = "binary cross-entropy"
    data_arguments = PromptDataArguments
    evaluate_options = {
        "num_tables": "prompt classifiers: evaluate prompts of this many tables (default: the run's)",
        "eval_examples": "prompt classifiers: prompts in the evaluation set (default: the run's, or 2000)",
        "eval_balanced": "prompt classifiers: a balanced evaluation set (default: the run's, or natural rates)",
        "edge_probability": "prompt classifiers: rho of the evaluation prompts (default: the run's, or 0.5)",
    }
    _defaults = {"eval_examples": 2000, "eval_balanced": False, "edge_probability": 0.5, "eval_seed": 1}

    def check_data(self, data_args):
        if data_args.prompt_task not in PROMPT_TASKS:
            raise ValueError(f"data.prompt_task={data_args.prompt_task!r} is not one of {PROMPT_TASKS}")
        # None takes the model's V or C (checked with its config); a given value is checked here
        given = [1 if value is None else value for value in (data_args.num_tables, data_args.num_columns)]
        check_task_arguments(*given, data_args.edge_probability, "data")
        for name in ("num_train_examples", "eval_examples"):
            value = getattr(data_args, name)
            if value < (0 if name == "num_train_examples" else 1):
                raise ValueError(
                    f"data.{name}={value} is invalid: must be >= {0 if name == 'num_train_examples' else 1}"
                )
        if data_args.eval_seed == data_args.data_seed_base:
            raise ValueError(f"data.eval_seed={data_args.eval_seed} equals data.data_seed_base: the evaluation prompts "
                             "would be training prompts")  # fmt: skip

    def train(self, model_args, data_args, training_args, run):
        fields = {k: getattr(data_args, k) for k in ("num_tables", "num_columns") if getattr(data_args, k) is not None}
        if fields and "max_position_embeddings" not in json.loads(model_args.model_overrides):
            fields["max_position_embeddings"] = None  # derived again from the data's V and C (the dense table's rows)
        config = run.model_config(**fields)
        if data_args.num_train_examples == 0 and training_args.max_steps <= 0:
            raise ValueError("data.num_train_examples=0 trains on an endless stream: set training.max_steps")
        set_seed(training_args.seed)
        model = AutoModelForSequenceClassification.from_config(config)
        processor = processor_for(config, data_args.feature_seed)
        data = vars(data_args)
        train_split = _dataset(data, config.num_tables, config.num_columns, eval_set=False)
        eval_split = _dataset(data, config.num_tables, config.num_columns, eval_set=True)
        training_args.remove_unused_columns = False  # the collator reads the raw tables and queries
        trainer = run.trainer(
            processor,
            model=model,
            train_dataset=train_split,
            eval_dataset=eval_split,
            data_collator=PromptCollator(processor),
            compute_metrics=compute_binary_metrics,
            callbacks=list(run.callbacks),
        )
        results = trainer.evaluate(eval_split)
        if not trainer.is_world_process_zero():
            return None
        results = {key: float(value) for key, value in results.items()}
        results.update(eval_num_tables=config.num_tables, eval_examples=len(eval_split))
        return results

    @torch.no_grad()
    def evaluate_folder(self, folder, data, options, batch_size, recorded):
        """The binary metrics and the mean binary cross-entropy on a freshly generated evaluation set (the run's
        seeds, so the same prompts as its own evaluation), at the run's number of tables or `num_tables`."""
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        processor = AutoFeatureExtractor.from_pretrained(folder)
        data = {**self._defaults, **data, **options}
        num_tables = data.get("num_tables") or model.config.num_tables
        count = data["eval_examples"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"eval_examples must be a count >= 1, got {count!r}")
        split = _dataset(data, num_tables, model.config.num_columns, eval_set=True)
        collate = PromptCollator(processor)
        logits, labels = [], []
        batch_size = max(batch_size, 64)
        for start in range(0, len(split), batch_size):
            batch = collate([split[i] for i in range(start, min(start + batch_size, len(split)))])
            labels.append(batch.pop("labels"))
            logits.append(model(**batch).logits.float())
        logits, labels = torch.cat(logits), torch.cat(labels)
        results = {f"eval_{k}": v for k, v in binary_metrics(logits, labels).items()}
        results.update(
            eval_loss=float(torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], (labels + 1) / 2)),
            eval_num_tables=num_tables,
            eval_examples=len(split),
        )
        return results

    def load_preprocessor(self, source, run_dir):
        return AutoFeatureExtractor.from_pretrained(saved_folder(source, run_dir, "preprocessor_config.json"))

    def figures(self, model, folder, data):
        """The attention-mask PNG of the model's layers (`hf_models.lowrank_icl.visualize_lowrank_icl`)."""
        from ..lowrank_icl.visualize_lowrank_icl import plot_masks

        name = "attention_masks.png"
        densities = plot_masks(model.config, folder / name)
        caption = "Attention masks of the layers at V={}, C={}: {}".format(
            model.config.num_tables, model.config.num_columns,
            ", ".join(f"{kind} {100 * value:.2f}% of the L×L pairs" for kind, value in densities.items()),
        )  # fmt: skip
        return [{"file": name, "alt": "attention masks", "caption": caption}]

    def run_pipeline(self, folder, inputs, timeout=600):
        """`inputs`: a list of (tables, query); the model and its processor load with `trust_remote_code` in a process
        without hf_models, and the outputs are the processor's `post_process` per prompt."""
        from ..hub.remote_code import run_isolated_prompt_classifier

        return run_isolated_prompt_classifier(folder, inputs, timeout=timeout)

    def card_fields(self, model, preprocessor, data, training, results):
        config = model.config
        num_tables = results.get("eval_num_tables", config.num_tables)
        rho = data.get("edge_probability", 0.5)
        name = f"table_connectivity (V={num_tables}, C={config.num_columns}, rho={rho})"
        train_count = data.get("num_train_examples", 0)
        training_data = f"{train_count} distinct prompts" if train_count else "an endless stream of fresh prompts"
        balance = "balanced" if data.get("eval_balanced") else "natural class rates"
        metrics = [("accuracy", "Accuracy", results["eval_accuracy"]),
                   ("balanced_accuracy", "Balanced accuracy", results["eval_balanced_accuracy"]),
                   ("f1", "F1 (connected)", results["eval_f1"])]  # fmt: skip
        if "eval_auroc" in results:
            metrics.append(("roc_auc", "AUROC", results["eval_auroc"]))
        metrics.append(("loss", "Binary cross-entropy", results["eval_loss"]))
        tables = example_tables(config.num_columns)
        return {
            "dataset_name": name,
            "dataset_type": "table_connectivity",
            "hub_dataset": None,
            "split": "synthetic evaluation prompts",
            "metrics": metrics,
            "data_description": f"{name}, generated by `hf_models.data.table_connectivity`: training on "
            f"{training_data}{' (balanced labels)' if data.get('balanced') else ''}; evaluation on "
            f"{results.get('eval_examples', '?')} other prompts ({balance}, positive rate "
            f"{results.get('eval_positive_rate', float('nan')):.3f})",
            "preprocessing_description": f"Processor: `{type(preprocessor).__name__}` (each table index and column "
            f"name -> a fixed random Gaussian vector of {config.n_dims} dims, seed {preprocessor.feature_seed}; the "
            "separator is zeros; the model never sees names or ids)",
            "batch_unit": "prompts",
            "usage": USAGE.replace("{columns}", str(config.num_columns))
            .replace("{tables}", _list_literal(tables))
            .replace("{query}", json.dumps([tables[0][0], tables[2][-1]]))
            .replace("{first}", tables[0][0])
            .replace("{second}", tables[2][-1]),
        }
