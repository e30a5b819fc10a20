"""What this machine offers: CPU cores, RAM, GPUs and platform, sent when a node registers.

GPUs are found with ``nvidia-smi`` (the NVIDIA driver's query interface,
``--query-gpu=name,memory.total --format=csv,noheader,nounits``, memory in MiB) when it is
on ``PATH``; otherwise with ``torch.cuda`` when an NVIDIA driver is loaded
(``/proc/driver/nvidia``) — torch is imported lazily and any failure means "no GPUs"; on
a machine without the driver torch is never imported (it would cost an idle node ~200 MB
and seconds of start-up for nothing). Detection never raises: a broken driver or a hung
tool is reported as a machine without GPUs.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import shutil
import subprocess
from typing import Any

import psutil

from quackmesh.core.schemas import GpuInfo, Hardware

__all__ = ["NVIDIA_SMI_TIMEOUT_S", "detect_gpus", "detect_hardware", "parse_nvidia_smi"]

log = logging.getLogger(__name__)

NVIDIA_SMI_TIMEOUT_S = 5.0
_MIB = 1024 * 1024
_MAX_MODEL_LEN = 128  # GpuInfo.model max_length


def detect_hardware() -> Hardware:
    """Describe this machine: usable cores, total RAM, GPUs and an ``os-arch`` platform."""
    return Hardware(
        cpu_cores=_cpu_cores(),
        ram_bytes=int(psutil.virtual_memory().total),
        gpus=detect_gpus(),
        platform=_platform_tag(),
    )


def detect_gpus() -> list[GpuInfo]:
    """GPUs from ``nvidia-smi`` when it is on ``PATH`` and answers, else from torch, else none."""
    gpus = _gpus_from_nvidia_smi()
    if gpus is not None:
        return gpus
    return _gpus_from_torch()


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Parse ``name, memory.total`` CSV lines (memory in MiB); unreadable memory counts as 0.

    The name is split off at the *last* comma so that a model name containing a comma
    still parses.
    """
    gpus: list[GpuInfo] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, sep, memory = line.rpartition(",")
        if not sep:
            name, memory = line, ""
        name = name.strip()[:_MAX_MODEL_LEN]
        if not name:
            continue
        try:
            memory_bytes = max(0, int(float(memory.strip()) * _MIB))
        except ValueError:  # "[N/A]" on some boards (Jetson, vGPU)
            memory_bytes = 0
        gpus.append(GpuInfo(model=name, memory_bytes=memory_bytes))
    return gpus


def _gpus_from_nvidia_smi() -> list[GpuInfo] | None:
    """The GPUs ``nvidia-smi`` lists, or ``None`` when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return None
    if proc.returncode != 0:
        log.warning("nvidia-smi exited with %d: %s", proc.returncode, proc.stderr.strip()[:200])
        return None
    return parse_nvidia_smi(proc.stdout)


NVIDIA_DRIVER = "/proc/driver/nvidia"


def _gpus_from_torch() -> list[GpuInfo]:
    if not os.path.exists(NVIDIA_DRIVER):
        return []  # no driver: CUDA cannot see a GPU, so skip importing torch
    try:
        torch: Any = importlib.import_module("torch")
        if not torch.cuda.is_available():
            return []
        gpus = []
        for index in range(int(torch.cuda.device_count())):
            props = torch.cuda.get_device_properties(index)
            model = str(props.name)[:_MAX_MODEL_LEN]
            gpus.append(GpuInfo(model=model, memory_bytes=int(props.total_memory)))
        return gpus
    except Exception:  # torch absent, or present without a working CUDA runtime
        return []


def _cpu_cores() -> int:
    # The affinity mask is what this process may actually use (taskset, container cpusets).
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or psutil.cpu_count() or 1
    return max(1, cores)


def _platform_tag() -> str:
    """``linux-x86_64``, ``darwin-arm64``, ``linux-aarch64``: what schedulers match on."""
    system = platform.system().lower() or "unknown"
    machine = platform.machine().lower() or "unknown"
    return f"{system}-{machine}"[:128]
