"""What CPU this is: model name and the instruction sets that decide int8 and fp32 speed."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# the flags that matter for ONNX Runtime's fp32/int8 kernels (MLAS), as /proc/cpuinfo spells them
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """{"model", "isa": [...relevant flags...], "int8_class", "logical_cpus"}; Linux reads /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    isa = [f for f in ISA_FLAGS if f in flags]
    return {"model": model, "isa": isa, "int8_class": int8_class(isa), "logical_cpus": os.cpu_count()}


def int8_class(isa) -> str:
    """The int8 dot-product class MLAS can use here: AMX > AVX-512 VNNI > AVX-VNNI > AVX-512 > AVX2 (no VNNI)."""
    isa = set(isa)
    if "amx_int8" in isa:
        return "AMX"
    if "avx512_vnni" in isa:
        return "AVX-512 VNNI"
    if "avx_vnni" in isa:
        return "AVX-VNNI"
    if "avx512bw" in isa:
        return "AVX-512 (no VNNI)"
    if "avx2" in isa:
        return "AVX2 (no VNNI)"
    if "asimddp" in isa:
        return "Arm dot-product"
    return "baseline"
