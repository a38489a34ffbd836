"""Where the work runs: bf16 autocast only where the kernels in force have bf16 in hardware, so that an
instruction-set cap (`make test`'s second pass) makes an Intel machine compute as an AVX2 machine does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from heritage_cnn.base import devices


@pytest.mark.parametrize(
    ("capability", "onednn_cap", "below"),
    [
        ("AVX512", "", False),  # an Intel Xeon as it comes
        ("AVX512", "AVX2", True),  # oneDNN capped: its convolutions have no bf16
        ("AVX512", "avx512_core", True),  # AVX-512 without the BF16 extension
        ("AVX512", "AVX512_CORE_BF16", False),
        ("AVX512", "AVX512_CORE_AMX", False),
        ("AVX2", "", True),  # an AMD EPYC, or ATEN_CPU_CAPABILITY=avx2
        ("DEFAULT", "", True),
    ],
)
def test_kernels_below_bf16_read_both_caps(capability, onednn_cap, below, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)
    assert devices.kernels_below_bf16() is below


def test_autocast_follows_the_kernels_not_the_cpu_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with bf16 in hardware autocasts unless a cap forbids it; without, it stays in float32."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(devices, "kernels_below_bf16", lambda: False)
    assert devices.mixed_precision(cpu, True) == (True, torch.bfloat16)
    assert devices.mixed_precision(cpu, False) == (False, torch.float32)  # --no-amp
    monkeypatch.setattr(devices, "kernels_below_bf16", lambda: True)
    assert devices.mixed_precision(cpu, True) == (False, torch.float32)
    monkeypatch.setattr(devices, "kernels_below_bf16", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert devices.mixed_precision(cpu, True) == (False, torch.float32)


def test_the_avx2_cap_switches_bf16_off_in_a_real_process() -> None:
    """What `make test`'s second pass relies on, without any stand-in: the environment variables alone."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = "from heritage_cnn.base.devices import cpu_has_native_bf16 as f; import torch; print(f(), torch.backends.cpu.get_cpu_capability())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "AVX2"]


# Allocates three 16 MiB buffers, touches and frees them, 20 times (a step's activations), and prints the minor page
# faults that cost; with `keep` the process first asks glibc to keep freed blocks. Run in a child process: the
# setting is the whole process's.
_FAULTS = """
import ctypes, resource, sys
from heritage_cnn.base.devices import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
size = 16 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    blocks = [libc.malloc(size) for _ in range(3)]
    for block in blocks:
        ctypes.memset(block, 1, size)  # touch every page, as a tensor's first write does
    for block in blocks:
        libc.free(block)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(os, "confstr"), reason="glibc's mallopt")
def test_freed_training_buffers_are_kept_for_reuse() -> None:
    """20 rounds of three 16 MiB buffers: glibc's default gives the 48 MiB back to the kernel when they are freed
    (above its dynamic trim threshold, twice the largest block freed) and faults every page in again next round; kept,
    they fault in once (3 x 4096 pages) and are reused. The bounds sit between the two counts."""
    runs = {
        mode: subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True).stdout
        for mode in ("default", "keep")
    }
    _, default_faults = runs["default"].split()
    kept, kept_faults = runs["keep"].split()
    if "glibc" not in os.confstr("CS_GNU_LIBC_VERSION"):
        assert kept == "False"
        return
    assert kept == "True"
    pages = (16 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert int(default_faults) >= 20 * pages, runs
    assert int(kept_faults) <= 5 * pages, runs
