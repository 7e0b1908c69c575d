"""Nested optimisation in the one training path (`hf-models train`, `accelerate launch`): the Trainer every run uses.

- Level-wise learning rates: a model that names the nested level of some parameters (`nested_parameter_levels()`:
  parameter name -> level, and `config.nested_lr_decay`) trains level l at `learning_rate * nested_lr_decay ** l`
  (deeper levels slower, the "levels by update frequency" of Nested Learning); everything else at `learning_rate`.
  Weight decay follows Trainer's rule (none on biases and norms). The scheduler scales every group alike.
- Training progress: a model with `set_training_progress(fraction)` is told the fraction of steps done before each
  step (its dynamic nested-level weights follow it), also after a resume.
- Non-finite batches: a step whose loss or any gradient is NaN or infinite is skipped (its gradients are dropped, so
  the optimizer leaves the weights and its state untouched; with gradient accumulation the whole accumulated step
  goes), counted in `skipped_nonfinite_batches` in the logs and warned about. Gradient clipping is Trainer's
  (`max_grad_norm`).
- Weight averaging: `training.ema_decay` > 0 evaluates, checkpoints and returns an exponential moving average of the
  weights (training/averaging.py).
"""

import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .averaging import (
    TRAINING_WEIGHTS_NAME,
    WeightAverage,
    WeightAveragingCallback,
    load_training_weights,
    save_training_weights,
)
from .averaging import unwrapped as _unwrapped


logger = logging.get_logger(__name__)


def nested_parameter_groups(model, learning_rate, weight_decay, decay_parameter_names):
    """Optimizer parameter groups: one per (nested level or none, with or without weight decay), each with its
    learning rate. Every trainable parameter is in exactly one group."""
    model = _unwrapped(model)
    levels = model.nested_parameter_levels()
    unknown = set(levels) - {name for name, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"nested_parameter_levels names parameters the model does not have: {sorted(unknown)}")
    decay_factor = model.config.nested_lr_decay
    groups = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        level = levels.get(name)
        decay = weight_decay if name in decay_parameter_names else 0.0
        key = (-1 if level is None else level, decay)
        if key not in groups:
            rate = learning_rate if level is None else learning_rate * decay_factor**level
            label = "base" if level is None else f"nested level {level}"
            groups[key] = {"params": [], "lr": rate, "weight_decay": decay, "group_name": label}
        groups[key]["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


class TrainingProgressCallback(TrainerCallback):
    """Before each step, tell a model with `set_training_progress` the fraction of training done."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        model = _unwrapped(model) if model is not None else None
        if model is not None and hasattr(model, "set_training_progress") and state.max_steps > 0:
            model.set_training_progress(state.global_step / state.max_steps)


class NestedTrainer(Trainer):
    """`Trainer` with level-wise learning rates for models that declare nested levels, the training-progress
    callback, non-finite batches skipped and weight averaging (see the module docstring)."""

    def __init__(self, *args, callbacks=None, **kwargs):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        decay = getattr(training_args, "ema_decay", 0.0)
        # first, so that the other callbacks' on_train_end (a text model's last sample) see the final model
        self.weight_averaging = WeightAveragingCallback(decay) if decay else None
        extra = [self.weight_averaging] if self.weight_averaging else []
        super().__init__(*args, callbacks=[*extra, *(callbacks or []), TrainingProgressCallback()], **kwargs)
        self.skipped_nonfinite_batches = 0

    def _averaging(self):
        """The weight average while training with one (None otherwise)."""
        averaging = self.weight_averaging
        return averaging.average if averaging is not None and self.is_in_train else None

    def evaluate(self, *args, **kwargs):
        average = self._averaging()
        if average is None:
            return super().evaluate(*args, **kwargs)
        with average.applied(self.model):
            return super().evaluate(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        average = self._averaging()
        if average is None:
            return super()._save_checkpoint(model, trial)
        folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        with average.applied(self.model) as own:
            if self.args.should_save:  # before the checkpoint's trainer_state.json, which marks it complete
                save_training_weights(own, folder)
            return super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        target = self.model if model is None else model
        weights = Path(resume_from_checkpoint) / TRAINING_WEIGHTS_NAME
        if self.weight_averaging is not None:
            # the checkpoint's model: the average it saved (or, saved without averaging, its weights)
            self.weight_averaging.average = WeightAverage(target, self.weight_averaging.decay)
            if not weights.is_file():
                logger.warning(
                    f"--resume with ema_decay: {resume_from_checkpoint} holds no {TRAINING_WEIGHTS_NAME} (it was "
                    "saved without weight averaging); the average starts from its weights"
                )
        if weights.is_file():  # the optimizer continues from its own weights, not from the average
            load_training_weights(target, weights)

    def create_optimizer(self, model=None):
        target = _unwrapped(model if model is not None else self.model)
        if self.optimizer is None and hasattr(target, "nested_parameter_levels"):
            decay_names = set(self.get_decay_parameter_names(target))
            groups = nested_parameter_groups(target, self.args.learning_rate, self.args.weight_decay, decay_names)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
            optimizer_kwargs.pop("lr", None)  # each group has its own
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
            return self.optimizer
        return super().create_optimizer() if model is None else super().create_optimizer(model)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        checks = [torch.isfinite(loss).all()] + [torch.isfinite(g).all() for g in gradients]
        if bool(torch.stack([c.to(gradients[0].device if gradients else loss.device) for c in checks]).all()):
            return loss
        for parameter in model.parameters():
            parameter.grad = None
        self.skipped_nonfinite_batches += 1
        logger.warning(
            f"step {self.state.global_step + 1}: non-finite loss or gradients (loss {loss.item()}); the batch is "
            f"skipped (weights and optimizer state unchanged), {self.skipped_nonfinite_batches} so far"
        )
        self.log({"skipped_nonfinite_batches": float(self.skipped_nonfinite_batches)})
        return loss.detach().new_zeros(())


__all__ = ["NestedTrainer", "TrainingProgressCallback", "WeightAveragingCallback", "nested_parameter_groups"]
