"""Device, threads, mixed precision and memory format: chosen once per run, from the config.

bf16 autocast pays only where the hardware computes in bf16: CUDA, and CPUs with AMX or
AVX512-BF16. On a CPU without them PyTorch emulates bf16 and it is slower than float32 by an
order of magnitude (measured on a 2-core AVX2 EPYC: a 2048^2 matmul at 170 GFLOP/s in float32,
0.3 GFLOP/s in bf16; see benchmarks/bench_speed_throughput.py), so ``precision: auto`` picks float32
there and bf16 where it is native.

``CONVLENS_PRECISION=bf16|fp32`` decides what ``auto`` resolves to whatever the hardware, so a test
suite can be checked as a CPU with (or without) bf16 would run it (``pytest --precision``); an
explicit ``train.precision`` in a config always wins.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils import usable_cores


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" amx_bf16", " avx512_bf16"))


def auto_is_bf16(device: torch.device) -> bool:
    """What ``precision: auto`` means on ``device``: ``CONVLENS_PRECISION`` if set, else the hardware."""
    forced = os.environ.get("CONVLENS_PRECISION", "").strip().lower()
    if forced in ("bf16", "fp32"):
        return forced == "bf16"
    if forced:
        from ..errors import ConfigError

        raise ConfigError(f"CONVLENS_PRECISION={forced!r}; allowed: bf16, fp32 (or unset: the hardware decides)")
    return (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
        device.type == "cpu" and cpu_has_native_bf16()
    )


@dataclass(frozen=True)
class Precision:
    device: torch.device
    bf16: bool
    channels_last: bool
    threads: int
    fp16: bool = False  # CUDA only: float16 autocast, with a gradient scaler in the training loop

    def autocast(self):
        """The one autocast context of a run (a no-op context in float32)."""
        if self.fp16:
            return torch.autocast(self.device.type, dtype=torch.float16)
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def name(self) -> str:
        return "fp16 autocast" if self.fp16 else "bf16 autocast" if self.bf16 else "float32"

    def describe(self) -> str:
        fmt = "channels_last" if self.channels_last else "contiguous"
        return f"{self.device.type}, {self.name}, {fmt}, {self.threads} threads"


def choose(
    device: str = "auto",
    precision: str = "auto",
    channels_last: str = "auto",
    threads: int | None = None,
    has_conv: bool = True,
) -> Precision:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from ..errors import ConfigError

        raise ConfigError("train.device=cuda, but no CUDA device is available; allowed here: auto, cpu")
    dev = torch.device(device)
    if precision == "fp16" and dev.type != "cuda":
        from ..errors import ConfigError

        raise ConfigError("train.precision=fp16 needs train.device=cuda; allowed on the CPU: auto, fp32, bf16")
    if precision == "auto":
        bf16 = auto_is_bf16(dev)
    else:
        bf16 = precision == "bf16"
    # channels_last speeds up convolutions with oneDNN / cuDNN (1.7x for fp32 training of the
    # CSCI-611 net on this CPU); recurrent and dense models gain nothing from it
    cl = has_conv if channels_last == "auto" else channels_last == "on"
    n = threads or usable_cores()
    torch.set_num_threads(n)
    return Precision(dev, bf16, cl, n, fp16=precision == "fp16")


def busy_note(threads: int, load: float | None = None) -> str | None:
    """A warning when ``threads`` (chosen by default: every usable core) compete with other work:
    on a busy machine torch's threads keep waiting for each other (2 threads at load 8: 3.5x slower
    than one, on digits). ``load`` defaults to the 1-minute load average."""
    if threads < 2:
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # not available here (Windows)
            return None
    if load < threads:
        return None
    return (
        f"note: the machine is busy (load {load:.1f} on {threads} cores): torch's {threads} threads will wait "
        "for each other; train.threads: 1 (--set train.threads=1) is often several times faster here. Results "
        "differ slightly between thread counts (float sums in another order), so keep it fixed to compare runs"
    )
