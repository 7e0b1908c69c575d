"""Weight averaging in the one training path: `training.ema_decay` keeps an exponential moving average (EMA) of the
weights beside the ones the optimizer updates, and the run's model is the average.

After each optimizer step, for every floating-point parameter and persistent buffer (BatchNorm's running statistics
too), in float32:

    average <- d * average + (1 - d) * weights,    d = min(ema_decay, (1 + step) / (10 + step))

The step-dependent cap lets the average follow the fast early changes rather than remember the initial weights.
With an average:

- every evaluation during training runs on it, so it is also what `load_best_model_at_end` picks;
- each checkpoint's `model.safetensors` holds it (what export, `load_best_model_at_end` and a reader of the
  checkpoint get), and `training_weights.safetensors` beside it holds the optimizer's weights, from which
  `--resume` continues (the average from the checkpoint's model);
- at the end the model holds the average, or the best checkpoint's average with `load_best_model_at_end`.

`ema_decay: 0` (the default) turns it off: evaluation, checkpoints and the final model are the optimizer's weights.
"""

import contextlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback


TRAINING_WEIGHTS_NAME = "training_weights.safetensors"


def unwrapped(model):
    """The model inside its wrappers (DistributedDataParallel's `module`)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def averaged_tensors(model):
    """(name, tensor) of what is averaged: the floating-point parameters and the persistent floating-point buffers
    (a tied weight once)."""
    model = unwrapped(model)
    persistent = set(model.state_dict(keep_vars=True))
    named = [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if n in persistent)]
    return [(name, tensor) for name, tensor in named if tensor.is_floating_point()]


class WeightAverage:
    """The float32 exponential moving average of a model's `averaged_tensors`, started from its current values."""

    def __init__(self, model, decay):
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay={decay} is invalid: must be in (0, 1), or 0 for no weight averaging")
        self.decay = decay
        self.average = {name: tensor.detach().float().clone() for name, tensor in averaged_tensors(model)}

    def step_decay(self, step):
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model, step):
        weight = 1 - self.step_decay(step)
        for name, tensor in averaged_tensors(model):
            self.average[name].lerp_(tensor.detach().float(), weight)

    @torch.no_grad()
    def copy_to(self, model):
        for name, tensor in averaged_tensors(model):
            tensor.copy_(self.average[name])

    @contextlib.contextmanager
    def applied(self, model):
        """The model holds the average inside the block and its own weights again after it; yields those weights
        ({name: tensor}, copies)."""
        own = {name: tensor.detach().clone() for name, tensor in averaged_tensors(model)}
        self.copy_to(model)
        try:
            yield own
        finally:
            with torch.no_grad():
                for name, tensor in averaged_tensors(model):
                    tensor.copy_(own[name])


def save_training_weights(weights, folder):
    """The optimizer's weights ({name: tensor}) as `training_weights.safetensors` in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()},
              str(folder / TRAINING_WEIGHTS_NAME))  # fmt: skip


@torch.no_grad()
def load_training_weights(model, path):
    """Copy a `training_weights.safetensors` into the model; a file that does not match the model is refused."""
    saved = load_file(str(path))
    named = dict(averaged_tensors(model))
    if set(saved) != set(named):
        missing, extra = sorted(set(named) - set(saved)), sorted(set(saved) - set(named))
        raise ValueError(f"{path} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, tensor in named.items():
        if saved[name].shape != tensor.shape:
            raise ValueError(f"{path}: {name} has shape {tuple(saved[name].shape)}, the model {tuple(tensor.shape)}")
        tensor.copy_(saved[name])


class WeightAveragingCallback(TrainerCallback):
    """Starts the average at the beginning of training (unless a resume already set it from its checkpoint), updates
    it after each optimizer step and puts it in the model at the end (unless `load_best_model_at_end` loaded the
    best checkpoint, which holds the average of its step)."""

    def __init__(self, decay):
        self.decay = decay
        self.average = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.average is None:
            self.average = WeightAverage(model, self.decay)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.average.update(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not (args.load_best_model_at_end and state.best_model_checkpoint is not None):
            self.average.copy_to(model)


__all__ = [
    "TRAINING_WEIGHTS_NAME",
    "WeightAverage",
    "WeightAveragingCallback",
    "averaged_tensors",
    "load_training_weights",
    "save_training_weights",
    "unwrapped",
]
