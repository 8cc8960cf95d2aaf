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

RUNTIME_PACKAGES = ("onnxruntime", "openvino", "optuna", "numpy")


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


@cache
def fingerprint() -> dict[str, Any]:
    """CPU model, cores, memory, OS, accelerators, board, runtime versions, tuner version."""
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
    ident = "|".join(str(fp.get(k)) for k in ("machine", "cpu_model", "cpu_logical", "board", "accelerators"))
    digest = hashlib.sha256(ident.encode()).hexdigest()[:6]
    return f"{fp.get('machine', 'unknown')}-{fp.get('cpu_logical', 0)}c-{digest}"


def hardware_identity(fp: dict[str, Any]) -> dict[str, Any]:
    """The fields that must agree for two machines to share a study."""
    return {k: fp.get(k) for k in ("machine", "cpu_model", "cpu_logical", "board", "accelerators")}
