"""What the benchmarks print about the CPU: its model and the SIMD flags that decide the speed of
float32 and bf16 kernels (read from /proc/cpuinfo; "?" and none elsewhere)."""

from __future__ import annotations

import platform

FLAGS = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"]


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU model name and which of :data:`FLAGS` it has, in that order."""
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, [f for f in FLAGS if f in flags]
