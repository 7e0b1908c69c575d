"""Which mixed precision a training run uses on the current machine, and which it cannot use.

`precision: auto` picks, per host:

| host | auto | bf16 | fp16 |
|---|---|---|---|
| CPU with native bf16 (AVX512-BF16 or AMX) | bf16 | bf16 | refused |
| CPU without (AVX2, or an unknown CPU) | float32 | bf16, emulated (slow; warned) | refused |
| CUDA GPU with bf16 (Ampere and newer) | bf16 | bf16 | fp16 |
| older CUDA GPU | fp16 | refused | fp16 |
| another accelerator (MPS, XPU, ...) | float32 | passed to transformers | passed to transformers |

`HF_MODELS_CPU_BF16=1` (or `0`) overrides the CPU detection: for a virtual machine that hides its CPU flags, or to
run a machine as the other kind.
"""

import functools
import os
from pathlib import Path

import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)

PRECISIONS = ("auto", "no", "bf16", "fp16")
CPU_BF16_ENV = "HF_MODELS_CPU_BF16"
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def _cpuinfo_fields(path="/proc/cpuinfo"):
    """The first CPU's fields in /proc/cpuinfo (Linux) as {name: value}; empty where the file does not exist (macOS,
    Windows) or cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpuinfo_flags(path="/proc/cpuinfo"):
    """The CPU flags listed in /proc/cpuinfo; an empty set where there is none."""
    return set(_cpuinfo_fields(path).get("flags", "").split())


def _torch_reports_native_bf16():
    """torch's own CPU feature detection (cpuinfo, works on every OS), where this torch has it; None otherwise."""
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if probe is not None]
    if not probes:
        return None
    try:
        return any(probe() for probe in probes)
    except Exception:  # a torch build without the probe's backing library
        return None


@functools.cache
def cpu_has_native_bf16():
    """True where this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX), so bf16 autocast speeds training up. On
    other CPUs PyTorch emulates bf16 and it runs many times slower than float32.

    Order: the `HF_MODELS_CPU_BF16` override (1/0), torch's CPU detection, /proc/cpuinfo; False when none answers."""
    override = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if override:
        if override in ("1", "true", "yes", "on"):
            return True
        if override in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{CPU_BF16_ENV}={override!r} is invalid: use 1 or 0 (or leave it unset to detect)")
    reported = _torch_reports_native_bf16()
    if reported is not None:
        return reported
    return bool(_NATIVE_BF16_FLAGS & _cpuinfo_flags())


def bf16_is_fast(device_type=None):
    """True where bf16 autocast speeds training up on `device_type` ("cuda" or "cpu"; default: CUDA when present)."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def has_accelerator():
    """A CUDA (or other torch accelerator) device is present."""
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def training_device(use_cpu=False):
    """The device type a Trainer run lands on: "cpu" (asked for, or no accelerator), "cuda", or another accelerator's
    type ("mps", "xpu", ...)."""
    if use_cpu or not has_accelerator():
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    accelerator = getattr(torch, "accelerator", None)
    return accelerator.current_accelerator().type if accelerator is not None else "cpu"


def choose_precision(requested, device_type):
    """The precision ("bf16", "fp16" or "no") a run with `training.precision=requested` uses on `device_type`.

    `auto` picks the fastest one the host runs; an explicit choice the host cannot run raises a `ValueError` that says
    why, before any work starts."""
    if requested not in PRECISIONS:
        raise ValueError(f"training.precision={requested!r} is invalid: must be one of {PRECISIONS}")
    if device_type == "cpu":
        if requested == "fp16":
            raise ValueError(
                "training.precision=fp16 needs a CUDA GPU, and this run is on the CPU (no GPU, or use_cpu): use "
                "precision bf16, no or auto"
            )
        if requested == "auto":
            return "bf16" if bf16_is_fast("cpu") else "no"
        if requested == "bf16" and not bf16_is_fast("cpu"):
            logger.warning(
                "training.precision=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): PyTorch emulates it, "
                "and training runs several times slower than in float32 (precision auto or no)"
            )
        return requested
    if device_type == "cuda":
        if requested == "auto":
            return "bf16" if bf16_is_fast("cuda") else "fp16"
        if requested == "bf16" and not bf16_is_fast("cuda"):
            name = torch.cuda.get_device_name()
            raise ValueError(
                f"training.precision=bf16 needs a GPU with bf16 support (Ampere or newer); {name} has none: use "
                "precision fp16, no or auto"
            )
        return requested
    return "no" if requested == "auto" else requested


def processor_name():
    """The CPU's model name with its family and model numbers where /proc/cpuinfo has them (a virtual machine may
    show only "AMD EPYC"), else `platform.processor()`."""
    import platform

    fields = _cpuinfo_fields()
    if "model name" in fields:
        numbers = [f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields]
        return fields["model name"] + (f" ({', '.join(numbers)})" if numbers else "")
    return platform.processor() or platform.machine() or "unknown"


def host_info():
    """What a benchmark ran on, for its JSON: processor, torch's CPU capability, native bf16, threads, GPU, versions,
    and the `kind` its result files are named by (`host_kind`)."""
    import platform

    import transformers

    info = {
        "processor": processor_name(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_flags": sorted(_cpuinfo_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    info["kind"] = host_kind(info)
    return info


def host_kind(info):
    """The kind of machine `info` describes, which benchmark result files are named by: cpu_<torch's CPU
    capability>[_bf16 where the CPU has native bf16] (cpu_avx2, cpu_avx512_bf16, ...)."""
    return f"cpu_{info['cpu_capability'].lower()}" + ("_bf16" if info["cpu_native_bf16"] else "")


def describe_host(info):
    """One line naming the machine of a `host_info()`: processor, torch's CPU capability, native bf16, threads and
    the versions."""
    threads = info["threads"]
    return (f"Machine: {info['processor']}; torch CPU capability {info['cpu_capability']}, "
            f"{'native bf16' if info['cpu_native_bf16'] else 'no native bf16'}; {threads} thread{'s' * (threads != 1)}; "
            f"torch {info['torch']}, transformers {info['transformers']}.")  # fmt: skip
