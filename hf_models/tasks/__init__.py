"""Tasks: the unit that training, evaluation and export plug into (see `base.Task` for the interface).

Adding a task: a module here with a `Task` subclass, and its line in `TASKS` below."""

import json
from pathlib import Path

from .base import Task
from .causal_lm import CausalLmTask
from .forecasting import ForecastingTask
from .image_classification import ImageClassificationTask
from .prompt_classification import PromptClassificationTask


TASKS = {
    task.name: task
    for task in (CausalLmTask(), ImageClassificationTask(), PromptClassificationTask(), ForecastingTask())
}


def task_for_config(config, origin="the model config"):
    """The task of a model config: the head its `architectures` names (what `save_pretrained` writes, so a saved
    folder's task is read, never guessed), else the only task head registered for its config class (a class of the
    task's Auto class named with the task's suffix)."""
    architectures = getattr(config, "architectures", None) or []
    named = {task.name for name in architectures for task in TASKS.values() if name.endswith(task.architecture_suffix)}
    if len(named) == 1:
        return TASKS[named.pop()]
    if named:
        raise ValueError(f"{origin} names heads of several tasks in its architectures {architectures}")
    heads = [task for task in TASKS.values() if _registered(task, type(config))]
    if len(heads) == 1:
        return heads[0]
    if architectures:
        raise ValueError(f"{origin}: architectures {architectures} name no head of the tasks {sorted(TASKS)}")
    raise ValueError(
        f'{origin} ({getattr(config, "model_type", "?")}) does not say its task: add "architectures": '
        f'["<Prefix>For<Task>"] naming one of the heads ({", ".join(t.architecture_suffix for t in heads) or "none"})'
    )


def task_of_folder(folder):
    """The task of a saved model folder, from its config.json `architectures`."""
    from transformers import PretrainedConfig

    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} cannot be read: {error}") from None
    return task_for_config(PretrainedConfig(architectures=raw.get("architectures")), str(path))


def _registered(task, config_class):
    """Whether `config_class` has a head of `task`: a class registered with the task's Auto class whose name ends
    with its suffix (a stock model's `...ForSequenceClassification` under `AutoModelForSequenceClassification` is no
    prompt classifier)."""
    import transformers

    mapping = getattr(transformers, task.auto_class)._model_mapping
    try:
        head = mapping[config_class]
    except KeyError:
        return False
    return any(c.__name__.endswith(task.architecture_suffix) for c in (head if isinstance(head, tuple) else (head,)))


__all__ = ["TASKS", "Task", "task_for_config", "task_of_folder"]
