"""Battery: two Trainer steps change the weights with a finite loss; a Trainer checkpoint reloads as remote code."""

import torch
from conftest import skip_if_listed
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_models.hub import audit_folder, run_isolated


def test_two_trainer_steps_and_checkpoint_reload(spec, tmp_path):
    skip_if_listed(spec, "trainer")
    model = spec.build()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = spec.make_inputs(model.config, batch=8, seq=16, seed=11)
    dataset = Dataset.from_dict({k: v.tolist() for k, v in inputs.items()}).with_format("torch")
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    result = trainer.train()
    assert result.global_step == 2
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"

    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert not audit_folder(checkpoint, spec.all_auto_classes)
    model.eval()
    probe = spec.make_inputs(model.config, batch=2, seq=10, seed=12)
    with torch.no_grad():
        expected = model(**probe)[spec.output_key]
    outputs, info = run_isolated(checkpoint, spec.auto_class, probe)
    assert info["hf_models_modules"] == []
    torch.testing.assert_close(outputs[spec.output_key], expected, rtol=0, atol=0)
