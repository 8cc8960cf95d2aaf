"""Where a measurement came from: the platform fingerprint and its short tag."""

from __future__ import annotations

import hashlib
import os
import platform as _platform
import re
import shutil
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

#: onnxruntime-gpu is the GPU build's distribution name (it installs the same onnxruntime module)
RUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "openvino", "optuna", "numpy", "nvidia-ml-py")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "cpu model", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return _platform.processor() or _platform.machine()


def board_model() -> str | None:
    """The board (device tree) or product name, where the OS tells it."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model", "/sys/class/dmi/id/product_name"):
        value = _read(path)
        if value:
            return value
    return None


def accelerators() -> list[str]:
    """Accelerators visible to this OS (by device node or vendor tool), without loading any runtime."""
    found: list[str] = []
    if any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl")) or shutil.which("nvidia-smi"):
        found.append("nvidia-gpu")
    if Path("/dev/rknpu").exists() or Path("/sys/kernel/debug/rknpu").exists():
        found.append("rockchip-npu")
    if any(Path("/dev").glob("davinci[0-9]*")):
        found.append("ascend-npu")
    if Path("/dev/accel").exists() or any(Path("/dev").glob("accel*")):
        found.append("accel")
    if Path("/sys/class/misc/intel_vpu").exists():
        found.append("intel-npu")
    return found


def nvidia_gpus() -> dict[str, Any] | None:
    """The NVIDIA GPUs NVML sees: ``{"gpus": [{"name", "memory_mb"}], "driver", "cuda"}``; None without NVML.

    ``cuda`` is the highest CUDA version the driver supports (``nvmlSystemGetCudaDriverVersion``), e.g. ``12.8``.
    """
    from tuner.measurement.gpu import open_nvml

    nvml, _reason = open_nvml()
    if nvml is None:
        return None
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            total = nvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append({"name": name.decode() if isinstance(name, bytes) else str(name), "memory_mb": total >> 20})
        driver = nvml.nvmlSystemGetDriverVersion()
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
        return {
            "gpus": gpus,
            "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
            "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}",
        }
    except nvml.NVMLError:
        return None
    finally:
        nvml.nvmlShutdown()


def runtime_versions() -> dict[str, str]:
    out: dict[str, str] = {"python": _platform.python_version()}
    for pkg in RUNTIME_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def tuner_version() -> str:
    try:
        return metadata.version("tuner")
    except metadata.PackageNotFoundError:
        from tuner import __version__

        return __version__


#: the fingerprint fields that say which hardware measured (the platform tag hashes them, plus the GPU models)
_HARDWARE_KEYS = ("machine", "cpu_model", "cpu_logical", "board", "accelerators")


@cache
def fingerprint() -> dict[str, Any]:
    """CPU model, cores, memory, OS, accelerators, NVIDIA GPUs (model, driver, CUDA; None without NVML), board,
    runtime versions, tuner version."""
    return {
        "host": _platform.node(),
        "machine": _platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else psutil.cpu_count(),
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
        "os": f"{_platform.system()} {_platform.release()}",
        "board": board_model(),
        "accelerators": accelerators(),
        "gpu": nvidia_gpus(),
        "runtimes": runtime_versions(),
        "tuner": tuner_version(),
    }


def usable_cores() -> int:
    return int(fingerprint()["usable_cores"] or 1)


def platform_tag(fp: dict[str, Any] | None = None) -> str:
    """A short, stable tag of the hardware (not the software): ``x86_64-2c-<hash6>``.

    Two machines of the same board and CPU get the same tag, so they can share a study.
    """
    fp = fp or fingerprint()
    ident = "|".join(str(fp.get(k)) for k in _HARDWARE_KEYS)
    models = gpu_models(fp)
    if models:  # a machine without an NVIDIA GPU keeps the tag it always had
        ident += "|gpu:" + ",".join(models)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:6]
    return f"{fp.get('machine', 'unknown')}-{fp.get('cpu_logical', 0)}c-{digest}"


def hardware_identity(fp: dict[str, Any]) -> dict[str, Any]:
    """The fields that must agree for two machines to share a study (the GPU models too: a CUDA study measured
    the GPU)."""
    return {**{k: fp.get(k) for k in _HARDWARE_KEYS}, "gpu_models": gpu_models(fp)}


def gpu_models(fp: dict[str, Any]) -> list[str] | None:
    """The NVIDIA GPU models of a fingerprint (``fp["gpu"]["gpus"][i]["name"]``), None without any."""
    gpu = fp.get("gpu")
    names = [str(g.get("name")) for g in gpu.get("gpus") or []] if isinstance(gpu, dict) else []
    return names or None
