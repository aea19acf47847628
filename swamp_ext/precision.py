"""What the machine offers mixed precision, and the warnings where a choice costs more than it
gives."""

from __future__ import annotations

import torch

from .config import Config


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AMX-BF16 or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def warn_precision(config: Config) -> None:
    """Warns (RuntimeWarning) where the configured precision costs more than it gives on this
    device: bf16 on a CPU without bf16 instructions, fp16 on any CPU."""
    import warnings

    if config.precision == "bf16" and config.device.startswith("cpu") \
            and not cpu_has_native_bf16():
        warnings.warn(
            "precision='bf16' on a CPU without bf16 instructions (no amx_bf16 / avx512_bf16; "
            f"torch's CPU capability: {torch.backends.cpu.get_cpu_capability()}): bf16 is "
            "emulated there and usually slower than fp32", RuntimeWarning, stacklevel=3)
    if config.precision == "fp16" and config.device.startswith("cpu"):
        warnings.warn("precision='fp16' on a CPU: fp16 convolutions and matrix products are "
                      "emulated there (many times slower than fp32); bf16 is the CPU's mixed "
                      "precision", RuntimeWarning, stacklevel=3)
