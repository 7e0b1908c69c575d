"""`precision: auto | no | bf16 | fp16` on every kind of host, whatever this machine is: the detection and the decision
with the CPU flags and CUDA mocked both ways, and real two-step trainings (text and image) in bf16, float32 and auto
on the CPU, with the CPU taken as native-bf16 and as not."""

import json

import pytest
import torch

from hf_models.cli import main
from hf_models.training import precision
from hf_models.training.arguments import parse_train_args
from hf_models.training.precision import CPU_BF16_ENV, choose_precision, cpu_has_native_bf16


TINY = "configs/train/ngt_tinyshakespeare_tiny.yaml"
TINY_IMAGE = "configs/train/mhc_mnist_tiny.yaml"
TINY_RECURRENT = "configs/train/twistor_hope_tinyshakespeare_tiny.yaml"  # the scan runs float32 inside autocast


@pytest.fixture
def cpu_kind(monkeypatch):
    """Make this machine's CPU count as native-bf16 (True) or not (False) for the rest of the test."""

    def set_kind(native):
        monkeypatch.setenv(CPU_BF16_ENV, "1" if native else "0")
        cpu_has_native_bf16.cache_clear()

    yield set_kind
    cpu_has_native_bf16.cache_clear()


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA host, with or without bf16."""

    def set_gpu(bf16):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4" if not bf16 else "NVIDIA A100")

    return set_gpu


def test_cpu_detection_sources(monkeypatch, tmp_path, cpu_kind):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    read_flags = precision._cpuinfo_flags
    # torch's cpuinfo answers first
    for answer in (True, False):
        monkeypatch.setattr(precision, "_torch_reports_native_bf16", lambda answer=answer: answer)
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is answer
    # a torch without the probes: /proc/cpuinfo's flags, and no file at all (macOS) means no native bf16
    monkeypatch.setattr(precision, "_torch_reports_native_bf16", lambda: None)
    for flags, expected in [
        ("fpu avx2 avx512f avx512_bf16", True),
        ("fpu amx_bf16 amx_tile", True),
        ("avx2 fma", False),
    ]:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(precision, "_cpuinfo_flags", lambda path=info: read_flags(path))
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is expected, flags
    missing = tmp_path / "no_such_cpuinfo"
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda path=missing: read_flags(path))
    cpu_has_native_bf16.cache_clear()
    assert cpu_has_native_bf16() is False
    # the override wins over every detection, and a bad value is named
    cpu_kind(True)
    assert cpu_has_native_bf16() is True
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    cpu_has_native_bf16.cache_clear()
    with pytest.raises(ValueError, match="HF_MODELS_CPU_BF16='maybe'"):
        cpu_has_native_bf16()


def test_the_real_probes_answer_on_this_machine():
    """Whatever this CPU is, torch's probe and /proc/cpuinfo (where it exists) agree."""
    reported = precision._torch_reports_native_bf16()
    flags = precision._cpuinfo_flags()
    if reported is None or not flags:
        pytest.skip("this torch has no CPU probes, or this OS has no /proc/cpuinfo")
    assert reported == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_decision_on_every_kind_of_host(cpu_kind, fake_cuda, caplog):
    cpu_kind(True)  # AVX512-BF16 / AMX
    assert [choose_precision(p, "cpu") for p in ("auto", "no", "bf16")] == ["bf16", "no", "bf16"]
    cpu_kind(False)  # AVX2: bf16 emulated, float32 is faster
    assert [choose_precision(p, "cpu") for p in ("auto", "no")] == ["no", "no"]
    assert choose_precision("bf16", "cpu") == "bf16"  # asked for explicitly: runs, with a warning
    for native in (True, False):
        cpu_kind(native)
        with pytest.raises(ValueError, match="precision=fp16 needs a CUDA GPU"):
            choose_precision("fp16", "cpu")
    fake_cuda(bf16=True)
    assert [choose_precision(p, "cuda") for p in ("auto", "no", "bf16", "fp16")] == ["bf16", "no", "bf16", "fp16"]
    fake_cuda(bf16=False)
    assert [choose_precision(p, "cuda") for p in ("auto", "no", "fp16")] == ["fp16", "no", "fp16"]
    with pytest.raises(ValueError, match="bf16 support.*Tesla T4"):
        choose_precision("bf16", "cuda")
    assert choose_precision("auto", "mps") == "no"
    with pytest.raises(ValueError, match="precision='fp8'"):
        choose_precision("fp8", "cpu")


def test_emulated_bf16_is_warned(cpu_kind):
    from transformers.testing_utils import CaptureLogger

    cpu_kind(False)
    with CaptureLogger(precision.logger) as captured:
        choose_precision("bf16", "cpu")
    assert "emulates" in captured.out
    cpu_kind(True)
    with CaptureLogger(precision.logger) as captured:
        choose_precision("bf16", "cpu")
    assert captured.out == ""


def _parse(tmp_path, *extra):
    training = parse_train_args(TINY, ["--output_dir", str(tmp_path), *extra])[2]
    return training.bf16, training.fp16, training.use_cpu


def test_parsed_arguments_on_a_cpu_host(tmp_path, monkeypatch, cpu_kind):
    monkeypatch.setattr(precision, "has_accelerator", lambda: False)
    cpu_kind(True)
    # bf16 on a CPU needs use_cpu, which TrainingArguments would otherwise refuse: every CPU run sets it
    assert _parse(tmp_path) == (True, False, True)
    assert _parse(tmp_path, "--precision", "no") == (False, False, True)
    assert _parse(tmp_path, "--bf16", "true") == (True, False, True)
    cpu_kind(False)
    assert _parse(tmp_path) == (False, False, True)
    assert _parse(tmp_path, "--precision", "bf16") == (True, False, True)
    for extra in (["--precision", "fp16"], ["--fp16", "true"]):
        with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
            _parse(tmp_path, *extra)


def test_parsed_arguments_on_a_gpu_host_running_on_the_cpu(tmp_path, monkeypatch, cpu_kind, fake_cuda):
    """A GPU host told `use_cpu`: the CPU's own kind decides."""
    monkeypatch.setattr(precision, "has_accelerator", lambda: True)
    fake_cuda(bf16=True)
    cpu_kind(False)
    assert _parse(tmp_path, "--use_cpu", "true") == (False, False, True)
    cpu_kind(True)
    assert _parse(tmp_path, "--use_cpu", "true") == (True, False, True)
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        _parse(tmp_path, "--use_cpu", "true", "--precision", "fp16")


@pytest.mark.parametrize(
    "config, native, requested, expected",
    [
        (TINY, True, "auto", "bf16"),
        (TINY, False, "auto", "no"),
        (TINY, False, "bf16", "bf16"),  # emulated: slow, but two tiny steps run
        (TINY_IMAGE, True, "auto", "bf16"),
        (TINY_IMAGE, False, "auto", "no"),
        (TINY_IMAGE, False, "bf16", "bf16"),
        (TINY_RECURRENT, True, "auto", "bf16"),
        (TINY_RECURRENT, False, "auto", "no"),
    ],
    ids=[
        "text-native-auto",
        "text-avx2-auto",
        "text-avx2-bf16",
        "image-native-auto",
        "image-avx2-auto",
        "image-avx2-bf16",
        "recurrent-native-auto",
        "recurrent-avx2-auto",
    ],  # fmt: skip
)
def test_two_training_steps_in_each_precision(tmp_path, shared_data, cpu_kind, config, native, requested, expected):
    cpu_kind(native)
    out = tmp_path / "run"
    extra = ["--max_eval_samples", "64"] if config == TINY_IMAGE else ["--max_eval_blocks", "4"]
    argv = [
        "train",
        config,
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--save_steps",
        "2",
        "--precision",
        requested,
    ]
    assert main([*argv, "--logging_steps", "1", "--sample_max_new_tokens", "0", *extra]) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert results["precision"] == expected and results["global_step"] == 2
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [log["loss"] for log in state["log_history"] if "loss" in log]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    recorded = (out / "train_config.yaml").read_text()
    assert f"bf16: {'true' if expected == 'bf16' else 'false'}" in recorded and "use_cpu: true" in recorded


def test_host_info_names_the_processor_and_its_bf16(cpu_kind):
    from hf_models.training import host_info

    for native in (True, False):
        cpu_kind(native)
        info = host_info()
        assert info["cpu_native_bf16"] is native and info["processor"] and info["threads"] >= 1
        assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_host_kind_and_description_on_both_kinds_of_cpu(monkeypatch, cpu_kind):
    """The name benchmark files take from the host, and the line their reports open with, on an AVX2 CPU without
    native bf16 and an AVX-512 one with it, whatever this machine is."""
    from hf_models.training import describe_host, host_info

    cases = (("AVX2", False, 1, "cpu_avx2", "no native bf16; 1 thread;"),
             ("AVX512", True, 2, "cpu_avx512_bf16", "native bf16; 2 threads;"))  # fmt: skip
    for capability, native, threads, kind, words in cases:
        cpu_kind(native)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda capability=capability: capability)
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        info = host_info()
        assert info["kind"] == kind
        line = describe_host(info)
        assert line.startswith(f"Machine: {info['processor']}; torch CPU capability {capability}, ") and words in line
        assert line.endswith(f"torch {torch.__version__}, transformers {info['transformers']}.")
