"""What a task is: the parts of training, evaluation and export that differ between tasks.

`hf-models train | evaluate | export` are one generic path (`training/run.py`, `hub/export.py`) that asks the task of
the run or folder for these; a task is a module in this package with one `Task` subclass, and a line in the registry
(`hf_models/tasks/__init__.py`)."""

from pathlib import Path


class Task:
    """A task's interface. Class attributes name it; the methods do the work that differs between tasks.

    - `name`: the registry key (`causal_lm`); `auto_class`: the transformers Auto class that loads its models;
      `architecture_suffix`: how its head classes end (`ForCausalLM`), which is how the task of a saved folder is read
      from its config's `architectures`; `pipeline_tag`: the Hub pipeline (and the card's `pipeline_tag`);
      `loss_label`: the training curve's loss axis; `evaluate_options`: the `hf-models evaluate` options it takes
      (name -> help), given to `evaluate_folder` in `options`; `data_arguments`: the dataclass of a run's `data:`
      section (parsed by `HfArgumentParser` with the model and training sections).
    """

    name = ""
    auto_class = ""
    architecture_suffix = ""
    pipeline_tag = ""
    loss_label = "loss"
    data_arguments = None  # the dataclass of the run's `data:` section
    evaluate_options: dict = {}
    _defaults: dict = {}  # what a data field the run's section leaves out means (for `own_data`)

    def check_data(self, data_args):
        """Refuse data arguments that do not fit the task (a ValueError naming the field), before anything is written."""

    def train(self, model_args, data_args, training_args, run):
        """Build the datasets, preprocessor and model, train through `run.trainer(...)` (the generic loop of
        training/run.py: run folder, Trainer, checkpoints, saving) and return the final results (main process) or
        None."""
        raise NotImplementedError

    def evaluate_folder(self, folder, data, options, batch_size, recorded):
        """Evaluate the model in `folder` on the run's data (`data`: its train_config.yaml data section, or {} for an
        export) with the `evaluate_options` the user gave (`options`); `recorded` is the whole run configuration."""
        raise NotImplementedError

    def own_data(self, data, options):
        """Whether `options` (None = the run's own) evaluate what the run's `data` section evaluates: each option
        equals the run's value (or, where the run leaves the field out, its default in `_defaults`)."""
        return all(value == data.get(key, self._defaults.get(key)) for key, value in options.items())

    def load_preprocessor(self, source, run_dir):
        """The tokenizer / processor saved with the model in `source`, else in the run folder."""
        raise NotImplementedError

    def prepare_export(self, model, preprocessor, training):
        """Anything the export adds to the model before saving it (e.g. a generation config)."""

    def card_fields(self, model, preprocessor, data, training, results):
        """The task's part of the model card: `dataset_name`, `dataset_type`, `hub_dataset` (a Hub id or None),
        `split`, `metrics` [(type, label, value)], `data_description`, `preprocessing_description`, `batch_unit` and
        `usage` (the usage snippets, Markdown; `{repo_id}` is filled in by the export)."""
        raise NotImplementedError

    def run_pipeline(self, folder, inputs, **options):
        """Reload the export in `folder` through the task's pipeline (`pipeline(pipeline_tag, model=folder,
        trust_remote_code=True)`) in a fresh process that cannot import hf_models, and run it on `inputs`; returns
        `(outputs, info)`, where `info["model_module"]` names the module the model class came from."""
        raise NotImplementedError

    def figures(self, model, folder, data):
        """Figures the export adds beside the training curve (`data`: the run's data section, or {}): writes them
        into `folder` and returns [{file, alt, caption}] for the card."""
        return []

    def export_sample(self, run_dir):
        """A sample the run produced for the card ({step, prompt, text}), or None."""
        return None

    def recipe_notes(self, model, data):
        """Task-specific parts of the card's training recipe (a list of phrases)."""
        return []


def config_number(value):
    """A number as written in a config: 300.0 -> 300 (TrainingArguments keeps warmup_steps as a float), 0.25 as is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def saved_folder(source, run_dir, file_name):
    """Where a preprocessor was saved: `source` (an export or a checkpoint) when it holds `file_name`, else the run
    folder (checkpoints written before the preprocessor was saved with them)."""
    return source if (Path(source) / file_name).exists() else run_dir


def local_source(source, resolve_path):
    """Whether a data source is a local path (else a Hub dataset id)."""
    return str(source).startswith((".", "/")) or resolve_path(source).exists() or Path(source).exists()
