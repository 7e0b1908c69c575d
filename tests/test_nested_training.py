"""The training path's nested optimisation (hf_models/training/nested.py): level-wise learning rates, the
training-progress schedule, skipped non-finite batches."""

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback, TrainingArguments
from transformers.modeling_outputs import ModelOutput

from hf_models import TwistorHopeConfig, TwistorHopeForCausalLM
from hf_models.training.nested import NestedTrainer, nested_parameter_groups


TINY = Path(__file__).resolve().parents[1] / "configs" / "models" / "twistor_hope" / "tiny.json"


def twistor(**overrides):
    config = TwistorHopeConfig.from_pretrained(str(TINY))
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return TwistorHopeForCausalLM(config)


def arguments(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, max_steps=6,
                  per_device_train_batch_size=2, report_to="none", save_strategy="no", logging_steps=1,
                  disable_tqdm=True, use_cpu=True, seed=0)  # fmt: skip
    values.update(overrides)
    return TrainingArguments(**values)


class TokenBlocks(torch.utils.data.Dataset):
    def __init__(self, count=32, length=8):
        self.ids = torch.randint(1, 96, (count, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def test_level_wise_learning_rates_and_weight_decay(tmp_path):
    model = twistor(num_nested_levels=3, constraint_type="learned", nested_lr_decay=0.5)
    trainer = NestedTrainer(model=model, args=arguments(tmp_path), train_dataset=TokenBlocks())
    optimizer = trainer.create_optimizer()
    seen = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            assert id(parameter) not in seen, "a parameter in two groups"
            seen[id(parameter)] = group
    names = dict(model.named_parameters())
    assert set(seen) == {id(p) for p in names.values()}  # every parameter exactly once
    for name, parameter in names.items():
        group = seen[id(parameter)]
        if ".omega_nets." in name or ".pi_nets." in name:
            level = int(name.split(".")[3])
            assert group["lr"] == pytest.approx(1e-3 * 0.5**level), name
            assert group["group_name"] == f"nested level {level}"
        elif ".critics." in name:
            index = int(name.split(".")[3])
            assert group["lr"] == pytest.approx(1e-3 * 0.5 ** (2 if index == 0 else index - 1)), name
        else:
            assert group["lr"] == 1e-3 and group["group_name"] == "base", name
        assert group["weight_decay"] == (0.0 if name.endswith("bias") or "norm" in name else 0.1), name
    # the scheduler scales every group alike: after warmup-free decay the ratios stay
    trainer.create_scheduler(num_training_steps=10, optimizer=optimizer)
    trainer.lr_scheduler.step()
    rates = {g["group_name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["nested level 2"] / rates["base"] == pytest.approx(0.25)


def test_groups_refuse_unknown_names():
    model = twistor()
    model.nested_parameter_levels = lambda: {"model.nested.nothing.weight": 0}
    with pytest.raises(ValueError, match="names parameters the model does not have"):
        nested_parameter_groups(model, 1e-3, 0.0, set())


class _Record(TrainerCallback):
    def __init__(self):
        self.weights = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights.append((state.global_step, model.model.level_constraint_weight()))


def test_nested_level_weights_follow_training_progress(tmp_path):
    model = twistor(level_constraint_weights=[0.0, 0.08])
    record = _Record()
    trainer = NestedTrainer(model=model, args=arguments(tmp_path, max_steps=4), train_dataset=TokenBlocks(),
                            callbacks=[record])  # fmt: skip
    trainer.train()
    # the weight during step s (1-based) is the progress before it, (s - 1) / max_steps, of the way to 0.08
    assert record.weights == [(s, pytest.approx(0.08 * (s - 1) / 4)) for s in range(1, 5)]


class ToyConfig(PretrainedConfig):
    model_type = "hfm_test_toy_regressor"


class ToyRegressor(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.linear = nn.Linear(3, 1)
        self.post_init()

    def forward(self, x, labels):
        return ModelOutput(loss=nn.functional.mse_loss(self.linear(x).squeeze(-1), labels))


class Regression(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, index):
        return {"x": torch.full((3,), float(index % 5)), "labels": torch.tensor(float(index % 3))}


class PoisonThirdBatch:
    """A collator whose third batch holds an infinite input (whatever order the sampler draws)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, items):
        self.calls += 1
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        if self.calls == 3:
            batch["x"][0, 1] = float("inf")
        return batch


class _Snapshots(TrainerCallback):
    def __init__(self, trainer_ref):
        self.trainer_ref, self.before, self.after = trainer_ref, {}, {}

    def _state(self, model):
        optimizer = self.trainer_ref[0].optimizer
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for key, value in optimizer.state.get(p, {}).items():
                    state[f"opt.{id(p)}.{key}"] = value.clone() if torch.is_tensor(value) else value
        return state

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.before[state.global_step + 1] = self._state(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after[state.global_step] = self._state(model)


def test_a_poisoned_batch_is_skipped_without_touching_weights_or_optimizer_state(tmp_path, caplog):
    torch.manual_seed(0)
    model = ToyRegressor(ToyConfig())
    holder = []
    snapshots = _Snapshots(holder)
    trainer = NestedTrainer(model=model, args=arguments(tmp_path, max_steps=5, weight_decay=0.1, max_grad_norm=1.0),
                            train_dataset=Regression(), data_collator=PoisonThirdBatch(), callbacks=[snapshots])  # fmt: skip
    holder.append(trainer)
    import transformers

    transformers.utils.logging.enable_propagation()
    with caplog.at_level("WARNING"):
        trainer.train()
    assert trainer.skipped_nonfinite_batches == 1
    assert "step 3: non-finite loss or gradients" in caplog.text
    poisoned_before, poisoned_after = snapshots.before[3], snapshots.after[3]
    assert poisoned_before.keys() == poisoned_after.keys()
    for key in poisoned_before:
        same = poisoned_before[key] == poisoned_after[key]
        assert bool(same.all()) if torch.is_tensor(same) else same, key
    # the steps around it train: the weights move and stay finite
    assert not torch.equal(snapshots.before[2]["linear.weight"], snapshots.after[2]["linear.weight"])
    assert not torch.equal(snapshots.before[4]["linear.weight"], snapshots.after[4]["linear.weight"])
    assert torch.isfinite(model.linear.weight).all()
    logged = [entry for entry in trainer.state.log_history if "skipped_nonfinite_batches" in entry]
    assert logged and logged[-1]["skipped_nonfinite_batches"] == 1.0
