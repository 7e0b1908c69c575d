"""Which mixed precision helps on the current machine."""

import functools
from pathlib import Path

import torch


@functools.cache
def bf16_is_fast(device_type=None):
    """True where bf16 autocast speeds training up: a CUDA GPU with bf16 support, or a CPU with native bf16
    instructions (AVX512-BF16 or AMX). On an AVX2-only CPU, PyTorch emulates bf16 matmuls and they run hundreds of
    times slower than float32, so bf16 must not be switched on there."""
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool({"avx512_bf16", "amx_bf16"} & flags)
