"""The session recipe every ONNX Runtime session of lookalike uses (engine, int8 measurement, bench): threads,
providers, CUDA library preload, device choice, and the optimizers left out on CPU."""

from __future__ import annotations

import logging
import os

from ..errors import ModelError

log = logging.getLogger(__name__)


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


_PRELOADED = False


def _preload_cuda_libraries(ort) -> None:
    """Load CUDA/cuDNN from the nvidia-* pip packages (onnxruntime-gpu >= 1.21) so a pip-only CUDA works."""
    global _PRELOADED
    if _PRELOADED or not hasattr(ort, "preload_dlls"):
        return
    _PRELOADED = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # system CUDA may still be found by the loader; the session will say if not
        log.debug("onnxruntime.preload_dlls failed: %s", exc)


def available_devices() -> list[str]:
    import onnxruntime as ort

    devices = ["cpu"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        devices.append("cuda")
    return devices


def split_device(device: str) -> tuple[str, int]:
    """("cuda", N) of "cuda:N" (as torch and sentence-transformers spell a GPU), (device, 0) otherwise."""
    if isinstance(device, str) and device.startswith("cuda:"):
        n = device[5:]
        if not n.isdigit():
            raise ModelError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
        return "cuda", int(n)
    return device, 0


def resolve_device(device: str = "auto") -> str:
    have = available_devices()
    device, _ = split_device(device)
    if device == "auto":
        return "cuda" if "cuda" in have else "cpu"
    if device not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    if device not in have:
        raise ModelError("device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider "
                         "(pip install -e \".[gpu]\" from lookalike's checkout, on a machine with CUDA 13 and cuDNN 9)")
    return device


SPIN_ENV = "LOOKALIKE_ORT_SPINNING"


def spinning() -> bool | None:
    """Whether ONNX Runtime's idle intra-op threads spin-wait ($LOOKALIKE_ORT_SPINNING=1/0; unset: SPIN_DEFAULT,
    off: on a shared machine a spinning thread burns the core another process needs, and its partner thread
    waits). benchmarks/bench_contention.py measures both, idle and with the other cores busy."""
    value = os.environ.get(SPIN_ENV)
    if value is None or value == "":
        return SPIN_DEFAULT
    if value not in ("0", "1"):
        raise ModelError(f"${SPIN_ENV}={value!r}: give 1 (spin-wait) or 0 (yield)")
    return value == "1"


# measured (benchmarks/results/contention-cpu.json, 2 cores, MiniLM fp32, 1,000 real records): with the other core
# busy, yielding threads embed 29.9 records/s against 24.9 spinning (+20%); idle, 52.4 against 53.6 (-2%)
SPIN_DEFAULT: bool | None = False


def session_setup(device: str, threads: int | None = None, device_id: int = 0):
    """(SessionOptions, providers, disabled optimizers) for an engine session on `device` ("cpu" or "cuda")."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    spin = spinning()
    if spin is not None:  # ORT's intra-op threads spin-wait for work between kernels unless told not to
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        _preload_cuda_libraries(ort)
        providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "device_id": device_id}),
                     "CPUExecutionProvider"]
    # CPU: ORT's SkipLayerNormalization kernel is slower than the unfused ops there (benchmarks/results/fusions-cpu.json)
    disabled = ["SkipLayerNormFusion"] if device == "cpu" else []
    return opts, providers, disabled
