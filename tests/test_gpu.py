"""With a CUDA device present: every model, its generation and a training run move to it. Marked `gpu` (deselected by
default; `python -m pytest -m gpu` on a machine with a GPU)."""

import json

import pytest
import torch

from hf_models.cli import main
from hf_models.training.precision import choose_precision, training_device


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_forward_and_backward_on_the_gpu_match_the_cpu(spec):
    model = spec.build().eval()
    inputs = spec.make_inputs(model.config, batch=2, seq=16, seed=3)
    with torch.no_grad():
        expected = model(**inputs)[spec.output_key]
    model.cuda()
    cuda_inputs = {k: v.cuda() for k, v in inputs.items()}
    with torch.no_grad():
        output = model(**cuda_inputs)[spec.output_key]
    assert output.device.type == "cuda"
    torch.testing.assert_close(output.cpu(), expected, rtol=1e-3, atol=1e-3)
    model.train()
    spec.loss(model(**cuda_inputs)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.device.type == "cuda" and torch.isfinite(g).all() for g in grads)


def test_generate_on_the_gpu_equals_the_cpu(spec):
    if not spec.can_generate:
        pytest.skip(f"{spec.name} does not generate")
    model = spec.build().eval()
    ids = spec.make_inputs(model.config, batch=1, seq=8, seed=4)["input_ids"]
    expected = model.generate(ids, max_new_tokens=8, do_sample=False)
    output = model.cuda().generate(ids.cuda(), max_new_tokens=8, do_sample=False)
    assert torch.equal(output.cpu(), expected)


@pytest.mark.parametrize(
    "config", ["configs/train/ngt_tinyshakespeare_tiny.yaml", "configs/train/mhc_mnist_tiny.yaml"]
)
def test_training_runs_on_the_gpu_in_auto_precision(tmp_path, shared_data, config):
    assert training_device() == "cuda"
    out = tmp_path / "run"
    assert main(["train", config, "--output_dir", str(out), "--max_steps", "2", "--save_steps", "2"]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["precision"] == choose_precision("auto", "cuda") and results["global_step"] == 2
