"""Weight averaging in the training path (`training.ema_decay`, hf_models/training/averaging.py): the average is the
EMA of the optimizer's weights, evaluation and checkpoints use it, `--resume` continues the optimizer's own weights
and the average exactly, `load_best_model_at_end` returns the best step's average."""

import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback
from transformers.modeling_outputs import ModelOutput

from hf_models.training.arguments import TrainArguments
from hf_models.training.averaging import TRAINING_WEIGHTS_NAME, WeightAverage, averaged_tensors
from hf_models.training.nested import NestedTrainer


class NormedConfig(PretrainedConfig):
    model_type = "hfm_test_normed_regressor"


class NormedRegressor(PreTrainedModel):
    """A linear regressor behind a BatchNorm (running statistics: persistent floating buffers, and an integer one)."""

    config_class = NormedConfig

    def __init__(self, config):
        super().__init__(config)
        self.norm = nn.BatchNorm1d(3)
        self.linear = nn.Linear(3, 1)
        self.post_init()

    def forward(self, x, labels):
        prediction = self.linear(self.norm(x)).squeeze(-1)
        return ModelOutput(loss=nn.functional.mse_loss(prediction, labels), logits=prediction)


class Regression(torch.utils.data.Dataset):
    def __init__(self, count=32, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(count, 3, generator=generator) * 2 + 1
        self.y = self.x @ torch.tensor([0.5, -1.0, 2.0]) + 0.1 * torch.randn(count, generator=generator)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.y[index]}


def tensors(model):
    return {name: tensor.detach().float().clone() for name, tensor in averaged_tensors(model)}


class Record(TrainerCallback):
    """The optimizer's weights after each step (the averaging callback has updated the average by then) and the
    weights the model holds during each evaluation."""

    def __init__(self):
        self.after_step, self.at_evaluation, self.before_step = {}, {}, {}

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.before_step[state.global_step] = tensors(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step[state.global_step] = tensors(model)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.at_evaluation[state.global_step] = tensors(model)


def arguments(folder, **overrides):
    values = dict(output_dir=str(folder), learning_rate=0.05, max_steps=8, per_device_train_batch_size=4,
                  report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, use_cpu=True, seed=0,
                  ema_decay=0.8)  # fmt: skip
    values.update(overrides)
    return TrainArguments(**values)


def trainer_for(folder, record=None, **overrides):
    torch.manual_seed(0)
    model = NormedRegressor(NormedConfig())
    return NestedTrainer(model=model, args=arguments(folder, **overrides), train_dataset=Regression(),
                         eval_dataset=Regression(16, seed=1), callbacks=[record] if record else None)  # fmt: skip


def saved(path):
    """A safetensors file's averaged entries (the integer num_batches_tracked left out)."""
    return {name: value for name, value in load_file(str(path)).items() if value.is_floating_point()}


def expected_average(start, steps, decay):
    """The EMA by its definition, from the weights before the first step and after each step."""
    average = {name: value.clone() for name, value in start.items()}
    for step in sorted(steps):
        d = min(decay, (1 + step) / (10 + step))
        average = {name: d * average[name] + (1 - d) * steps[step][name] for name in average}
    return average


def assert_close(actual, expected, **tolerance):
    assert actual.keys() == expected.keys()
    for name in actual:
        torch.testing.assert_close(actual[name], expected[name], **tolerance, msg=name)


def test_the_final_model_is_the_average_of_the_optimizer_weights(tmp_path):
    record = Record()
    trainer = trainer_for(tmp_path, record)
    start = tensors(trainer.model)
    trainer.train()
    assert set(start) == {
        "norm.weight",
        "norm.bias",
        "norm.running_mean",
        "norm.running_var",
        "linear.weight",
        "linear.bias",
    }  # fmt: skip  (num_batches_tracked, an integer, is not averaged)
    expected = expected_average(start, record.after_step, 0.8)
    assert_close(tensors(trainer.model), expected, rtol=1e-5, atol=1e-6)
    # not just the last weights: the average trails them
    assert not torch.allclose(expected["linear.weight"], record.after_step[8]["linear.weight"], atol=1e-3)


def test_evaluation_during_training_sees_the_average_and_training_continues_from_its_own_weights(tmp_path):
    record = Record()
    trainer = trainer_for(tmp_path, record, eval_strategy="steps", eval_steps=3)
    start = tensors(trainer.model)
    trainer.train()
    assert sorted(record.at_evaluation) == [3, 6, 8]  # and at the last step
    for step in (3, 6, 8):
        until = {s: w for s, w in record.after_step.items() if s <= step}
        assert_close(record.at_evaluation[step], expected_average(start, until, 0.8), rtol=1e-5, atol=1e-6)
    for step in (3, 6):  # the next step starts from the optimizer's weights, not from the average evaluated
        assert_close(record.before_step[step], record.after_step[step], rtol=0, atol=0)
    # the logged evaluation loss is the average's
    evaluated = NormedRegressor(NormedConfig())
    evaluated.load_state_dict({**evaluated.state_dict(), **record.at_evaluation[6]})
    evaluated.eval()
    data = Regression(16, seed=1)
    with torch.no_grad():
        loss = evaluated(data.x, data.y).loss.item()
    logged = [
        entry["eval_loss"] for entry in trainer.state.log_history if entry.get("step") == 6 and "eval_loss" in entry
    ]
    assert logged == [pytest.approx(loss, rel=1e-5)]


def test_checkpoints_hold_the_average_and_resume_continues_exactly(tmp_path):
    whole = tmp_path / "whole"
    record = Record()
    trainer = trainer_for(whole, record, save_strategy="steps", save_steps=4)
    start = tensors(trainer.model)
    trainer.train()
    checkpoint = whole / "checkpoint-4"
    until_4 = {s: w for s, w in record.after_step.items() if s <= 4}
    assert_close(saved(checkpoint / "model.safetensors"), expected_average(start, until_4, 0.8), rtol=1e-5, atol=1e-6)
    assert_close(saved(checkpoint / TRAINING_WEIGHTS_NAME), record.after_step[4], rtol=0, atol=0)

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(checkpoint, resumed_dir / "checkpoint-4")
    resumed_record = Record()
    resumed = trainer_for(resumed_dir, resumed_record, save_strategy="steps", save_steps=4)
    resumed.train(resume_from_checkpoint=str(resumed_dir / "checkpoint-4"))
    assert resumed_record.before_step[4].keys() == record.after_step[4].keys()
    assert_close(
        resumed_record.before_step[4], record.after_step[4], rtol=0, atol=0
    )  # its own weights, not the average
    for step in (5, 6, 7, 8):
        assert_close(resumed_record.after_step[step], record.after_step[step], rtol=1e-6, atol=1e-7)
    assert_close(tensors(resumed.model), tensors(trainer.model), rtol=1e-6, atol=1e-7)


def test_resume_from_a_checkpoint_saved_without_averaging_starts_the_average_from_its_weights(tmp_path, caplog):
    plain = trainer_for(tmp_path / "plain", save_strategy="steps", save_steps=4, ema_decay=0.0)
    plain.train()
    checkpoint = tmp_path / "plain" / "checkpoint-4"
    assert plain.weight_averaging is None and not (checkpoint / TRAINING_WEIGHTS_NAME).exists()
    import transformers

    transformers.utils.logging.enable_propagation()
    record = Record()
    resumed = trainer_for(tmp_path / "plain", record, save_strategy="steps", save_steps=4)
    with caplog.at_level("WARNING"):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert f"holds no {TRAINING_WEIGHTS_NAME}" in caplog.text
    start = saved(checkpoint / "model.safetensors")  # the optimizer's weights at step 4 (no average then)
    assert_close(tensors(resumed.model), expected_average(start, record.after_step, 0.8), rtol=1e-5, atol=1e-6)


def test_load_best_model_at_end_returns_the_best_steps_average(tmp_path):
    record = Record()
    trainer = trainer_for(tmp_path, record, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                          load_best_model_at_end=True, metric_for_best_model="eval_loss", max_steps=10,
                          learning_rate=0.5)  # fmt: skip
    trainer.train()
    best = trainer.state.best_global_step
    assert best is not None and trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best}")
    assert_close(tensors(trainer.model), record.at_evaluation[best], rtol=0, atol=0)


def test_without_averaging_nothing_changes(tmp_path):
    record = Record()
    trainer = trainer_for(tmp_path, record, ema_decay=0.0, eval_strategy="steps", eval_steps=4)
    trainer.train()
    assert trainer.weight_averaging is None
    assert_close(record.at_evaluation[4], record.after_step[4], rtol=0, atol=0)
    assert_close(tensors(trainer.model), record.after_step[8], rtol=0, atol=0)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, float("nan")])
def test_weight_average_refuses_a_decay_outside_the_open_interval(decay):
    with pytest.raises(ValueError, match=r"ema_decay=.* is invalid: must be in \(0, 1\)"):
        WeightAverage(nn.Linear(2, 2), decay)


def test_training_weights_of_another_model_are_refused(tmp_path):
    from hf_models.training.averaging import load_training_weights, save_training_weights

    save_training_weights(dict(nn.Linear(3, 2).named_parameters()), tmp_path)
    model = NormedRegressor(NormedConfig())
    with pytest.raises(ValueError, match=r"does not match the model: missing \['linear.bias', 'linear.weight'"):
        load_training_weights(model, tmp_path / TRAINING_WEIGHTS_NAME)
    save_training_weights({**tensors(model), "linear.weight": torch.zeros(2, 3)}, tmp_path)
    with pytest.raises(ValueError, match=r"linear.weight has shape \(2, 3\), the model \(1, 3\)"):
        load_training_weights(model, tmp_path / TRAINING_WEIGHTS_NAME)
