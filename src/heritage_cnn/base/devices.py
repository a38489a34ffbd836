"""Where the work runs: the device, mixed precision, and a description of the machine for provenance."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when there is a GPU, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    return torch.device(name)


# oneDNN's instruction-set names below AVX512_CORE_BF16, the first with bf16 dot products in hardware
# (oneDNN's "CPU dispatcher control" documentation lists them in this order).
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def kernels_below_bf16() -> bool:
    """True when the kernels in force are below AVX-512 BF16: the CPU's own (an AVX2 CPU), or as capped
    by ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA, with which an Intel machine computes as an AVX2 machine
    does, autocast included (`make test`'s second pass)."""
    capability = torch.backends.cpu.get_cpu_capability()  # what ATEN_CPU_CAPABILITY left in force
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return capability in ("DEFAULT", "NO AVX", "AVX2") or onednn_cap in _ONEDNN_ISAS_WITHOUT_BF16


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 convolutions in hardware (AVX-512 BF16 / AMX), so autocast pays off,
    and no instruction-set cap forbids those kernels."""
    if platform.machine().lower() in ("x86_64", "amd64") and kernels_below_bf16():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def mixed_precision(device: torch.device, wanted: bool) -> tuple[bool, torch.dtype]:
    """Whether to autocast, and to which type: bf16 on CPUs with native bf16 (the speed-up is in `make bench`)
    and on recent GPUs, fp16 (with loss scaling) on older GPUs. Evaluation always runs in float32."""
    if not wanted:
        return False, torch.float32
    if device.type == "cuda":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (True, torch.bfloat16) if cpu_has_native_bf16() else (False, torch.float32)


# mallopt's parameters (glibc's malloc.h) and the largest mmap threshold it accepts on 64-bit: 4 MiB * sizeof(long)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 << 20


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 32 MiB for reuse instead of handing them back to the kernel.

    A training step frees and allocates the stem's activations again (8 MB a tensor for the quick network);
    above glibc's dynamic threshold each is a fresh mmap that the kernel zero-fills page by page, every step. Kept,
    training on an AVX2 CPU ran 3-5 % faster for 50 MB more peak memory (benchmarks/recipes.md, "Where the AVX2
    demo's time goes"). It changes the whole process, so only the commands that train call it. False where the C
    library is not glibc (nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    # glibc's own symbol: another C library's mallopt, if it has one, takes other parameters
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1


def cpu_model() -> str:
    """The CPU's model name: bf16 kernels, and so trained weights, differ between CPU models."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_description(device: torch.device, autocast: torch.dtype | None = None) -> dict[str, str]:
    """What a run was trained on, recorded in its checkpoints so that results can be compared honestly: the
    CPU, torch, the device and the autocast type ("none": float32 throughout, the same on every CPU family)."""
    described = {"cpu": cpu_model(), "torch": torch.__version__, "device": str(device)}
    described["autocast"] = str(autocast).removeprefix("torch.") if autocast is not None else "none"
    if device.type == "cuda":
        described["gpu"] = torch.cuda.get_device_name(device)
    return described
