"""mHC through the shared pipeline: the text LM and the MNIST image classifier train with `hf-models train`,
evaluate, export with a generated card, and load through remote code in a process without hf_models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from card_snippets import card_snippets
from huggingface_hub import ModelCard

from hf_models.cli import main
from hf_models.data import image_processor_for, load_mnist, random_shift
from hf_models.hub import audit_folder
from hf_models.mhc import MhcConfig
from hf_models.tasks import task_of_folder
from hf_models.tasks.image_classification import image_transform


@pytest.fixture(scope="module")
def mnist(shared_data_module):
    return load_mnist(shared_data_module / "mnist")


@pytest.fixture(scope="module")
def shared_data_module():
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared corpora are expected at {SHARED_DATA}")
    return SHARED_DATA


def test_mnist_loads_from_the_idx_files(mnist):
    assert {name: len(split) for name, split in mnist.items()} == {"train": 60000, "test": 10000}
    assert mnist["train"].features["label"].names == [str(d) for d in range(10)]
    first = mnist["test"][0]
    assert first["image"].size == (28, 28) and first["image"].mode == "L"
    assert first["label"] == 7 and mnist["train"][0]["label"] == 5  # the well-known first digits of each split
    counts = np.bincount(mnist["test"]["label"], minlength=10)
    assert counts.min() > 850 and counts.sum() == 10000


def test_mnist_source_errors(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="neither a folder"):
        load_mnist("no-such-folder")


def _translated(array, dx, dy):
    """`array` moved right by dx and down by dy, zeros where nothing moves in (an independent numpy reference)."""
    out = np.zeros_like(array)
    h, w = array.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = array[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_random_shift_translates_by_up_to_max_shift_with_zero_fill(mnist):
    image = mnist["test"][0]["image"]
    digit = np.asarray(image)
    assert random_shift(image, 0) is image
    generator, seen = torch.Generator().manual_seed(0), set()
    for _ in range(300):
        state = generator.get_state()
        shifted = np.asarray(random_shift(image, 2, generator))
        generator.set_state(state)
        dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
        assert shifted.shape == digit.shape and np.array_equal(shifted, _translated(digit, dx, dy)), (dx, dy)
        seen.add((dx, dy))
    assert seen == {(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)}  # every offset, none beyond 2 pixels


def test_training_transform_shifts_and_the_evaluation_transform_does_not(mnist):
    processor = image_processor_for(MhcConfig.from_pretrained("configs/models/mhc/mnist.json"))
    batch = mnist["test"][:8]
    plain = image_transform(processor)(batch)
    assert torch.equal(plain["pixel_values"], image_transform(processor)(batch)["pixel_values"])
    torch.manual_seed(0)
    shifted = image_transform(processor, max_shift=2)(batch)
    assert shifted["pixel_values"].shape == plain["pixel_values"].shape
    assert torch.equal(shifted["labels"], plain["labels"])
    moved = [not torch.equal(a, b) for a, b in zip(shifted["pixel_values"], plain["pixel_values"], strict=True)]
    assert sum(moved) >= 6  # 1 in 25 offsets is (0, 0)


def _snippets_run(folder, tmp_path):
    snippets = card_snippets(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    for snippet in snippets:
        code = 'import sys; sys.modules["hf_models"] = None\n' + snippet
        result = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]


def test_image_classifier_trains_evaluates_exports_and_classifies_without_hf_models(
    tmp_path, mnist, shared_data_module, capsys
):
    run, out = tmp_path / "run", tmp_path / "export"
    # with the training augmentation on: the evaluation below repeats the run's own only if it sees unshifted images;
    # with label smoothing: Trainer's eval_loss is the smoothed loss, eval_cross_entropy the plain one
    assert main(["train", "configs/train/mhc_mnist_tiny.yaml", "--output_dir", str(run), "--random_shift", "2",
                 "--label_smoothing_factor", "0.1"]) == 0  # fmt: skip
    results = json.loads((run / "eval_results.json").read_text())
    assert results["global_step"] == 6 and results["eval_examples"] == 1000 and 0 <= results["eval_accuracy"] <= 1
    assert abs(results["eval_loss"] - results["eval_cross_entropy"]) > 1e-3
    (run / "eval_results.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "eval_results.json").read_text())
    assert abs(again["eval_accuracy"] - results["eval_accuracy"]) < 1e-9
    for key in ("eval_loss", "eval_cross_entropy"):
        assert abs(again[key] - results[key]) < 1e-5, key

    assert main(["export", str(run), str(out)]) == 0
    assert (out / "preprocessor_config.json").exists() and not (out / "tokenizer.json").exists()
    assert not audit_folder(out, ("AutoModel", "AutoModelForImageClassification"))
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-classification" and "mhc" in card.data.tags
    assert card.data.datasets == ["ylecun/mnist"]  # the local MNIST files' Hub dataset, linked
    recipe = next(line for line in card.text.splitlines() if line.startswith("- Recipe:"))
    assert recipe.endswith("label smoothing 0.1; 0.25 of each training image's patches dropped at random; each "
                           "training image moved by a random offset of up to 2 pixels per axis"), recipe  # fmt: skip
    parsed = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert parsed["accuracy"] == round(again["eval_accuracy"], 4)
    assert parsed["loss"] == round(again["eval_cross_entropy"], 4)  # the plain cross-entropy, not the smoothed loss

    # an exported folder has no run config: it is recognised as an image classifier and names its data
    mnist_dir = str(shared_data_module / "mnist")
    for arguments, message in (
        ([], "no train_config.yaml naming its data; pass --image-dataset"),
        (["--corpus", "README.md"], "task image_classification: --corpus do not apply"),
        (["--image-dataset", mnist_dir, "--eval-split", "valid"], "eval_split 'valid' is not a split"),
        (["--image-dataset", mnist_dir, "--max-eval-samples", "-1"], "max_eval_samples must be a count >= 0"),
    ):
        assert main(["evaluate", str(out), *arguments]) == 2
        assert message in capsys.readouterr().err, arguments
    card_results = (out / "eval_results.json").read_text()
    assert main(["evaluate", str(out), "--image-dataset", mnist_dir, "--max-eval-samples",
                 "1000", "--output", str(tmp_path / "exported_eval.json")]) == 0  # fmt: skip
    assert (out / "eval_results.json").read_text() == card_results  # the export's file stays what its card reports
    exported = json.loads((tmp_path / "exported_eval.json").read_text())
    assert exported["eval_examples"] == 1000 and exported["eval_split"] == "test"
    assert abs(exported["eval_accuracy"] - results["eval_accuracy"]) < 1e-9
    assert abs(exported["eval_cross_entropy"] - results["eval_cross_entropy"]) < 1e-5

    images = [mnist["test"][i]["image"] for i in range(4)]
    task = task_of_folder(out)  # the task reloads its export through its own pipeline
    assert task.pipeline_tag == "image-classification"
    predictions, info = task.run_pipeline(out, images, top_k=2)
    assert info["model_module"].startswith("transformers_modules") and info["processor"].startswith("ViTImage")
    assert len(predictions) == 4 and all(len(p) == 2 for p in predictions)
    assert all(p[0]["label"] in [str(d) for d in range(10)] for p in predictions)
    _snippets_run(out, tmp_path)


def test_text_lm_trains_exports_and_generates_without_hf_models(tmp_path, shared_data_module, capsys):
    run, out = tmp_path / "run", tmp_path / "export"
    assert main(["train", "configs/train/mhc_tinyshakespeare_tiny.yaml", "--output_dir", str(run),
                 "--max_steps", "4", "--max_eval_blocks", "8"]) == 0  # fmt: skip
    assert main(["export", str(run), str(out)]) == 0
    assert main(["evaluate", str(out), "--image-dataset", str(shared_data_module / "mnist")]) == 2
    assert "task causal_lm: --image-dataset do not apply to it" in capsys.readouterr().err
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-generation"
    text, info = task_of_folder(out).run_pipeline(out, "ROMEO:\n", max_new_tokens=20, seed=0)
    assert info["model_module"].startswith("transformers_modules") and text.startswith("ROMEO:\n") and len(text) == 27
    _snippets_run(out, tmp_path)


def test_one_channel_model_reads_gray_and_rgb_alike(mnist):
    """Pipelines load every image as RGB: the processor converts, and a one-channel model reads the channel mean,
    so a gray digit gives the same logits as the same digit converted to RGB."""
    import torch

    from hf_models import MhcConfig, MhcForImageClassification
    from hf_models.data import image_processor_for

    config = MhcConfig.from_pretrained("configs/models/mhc/tiny_image.json")
    model = MhcForImageClassification(config).eval()
    processor = image_processor_for(config)
    gray = mnist["test"][0]["image"]
    with torch.no_grad():
        from_gray = model(**processor(images=gray, return_tensors="pt")).logits
        from_rgb = model(**processor(images=gray.convert("RGB"), return_tensors="pt")).logits
        one_channel = processor(images=gray, return_tensors="pt")["pixel_values"][:, :1]
        direct = model(pixel_values=one_channel).logits
    torch.testing.assert_close(from_gray, from_rgb, rtol=0, atol=0)
    torch.testing.assert_close(from_gray, direct, rtol=1e-6, atol=1e-6)
