"""Hardware detection: the real machine, and nvidia-smi answers faked with a shell script."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from quackmesh.core.schemas import GpuInfo, Hardware
from quackmesh.node.hardware import detect_gpus, detect_hardware, parse_nvidia_smi

_MIB = 1024 * 1024


def _fake_tool(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory put first on PATH; torch is made unimportable so it cannot answer."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setitem(sys.modules, "torch", None)
    return directory


def test_detect_hardware_describes_this_machine() -> None:
    hw = detect_hardware()
    assert isinstance(hw, Hardware)
    assert hw.cpu_cores >= 1
    assert hw.ram_bytes > 0
    assert hw.platform.startswith(sys.platform.rstrip("0123456789"))
    assert "-" in hw.platform


def test_machine_without_nvidia_smi_or_torch_has_no_gpus(
    fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(fake_bin))  # nothing but the (empty) fake directory
    assert detect_gpus() == []


def test_nvidia_smi_output_is_parsed_into_gpus(fake_bin: Path) -> None:
    _fake_tool(
        fake_bin,
        "nvidia-smi",
        'case "$*" in\n'
        "  *--query-gpu=name,memory.total*--format=csv,noheader,nounits*)\n"
        '    echo "NVIDIA GeForce RTX 4090, 24564"\n'
        '    echo "NVIDIA A100-SXM4-80GB, 81920"\n'
        "    ;;\n"
        "  *) exit 9 ;;\n"
        "esac\n",
    )
    gpus = detect_gpus()
    assert gpus == [
        GpuInfo(model="NVIDIA GeForce RTX 4090", memory_bytes=24564 * _MIB),
        GpuInfo(model="NVIDIA A100-SXM4-80GB", memory_bytes=81920 * _MIB),
    ]
    assert detect_hardware().gpus == gpus


def test_failing_nvidia_smi_gives_no_gpus(fake_bin: Path) -> None:
    _fake_tool(
        fake_bin,
        "nvidia-smi",
        'echo "NVIDIA-SMI has failed because it could not communicate with the driver" >&2\n'
        "exit 9\n",
    )
    assert detect_gpus() == []


def test_nvidia_smi_that_cannot_run_gives_no_gpus(fake_bin: Path) -> None:
    (fake_bin / "nvidia-smi").write_text("not a program")
    (fake_bin / "nvidia-smi").chmod(0o755)
    assert detect_gpus() == []


def test_parse_nvidia_smi_tolerates_blank_lines_and_unknown_memory() -> None:
    text = "\nTesla T4, 15360\n\nJetson Orin, [N/A]\nOdd, Name, With Commas, 1024\n"
    assert parse_nvidia_smi(text) == [
        GpuInfo(model="Tesla T4", memory_bytes=15360 * _MIB),
        GpuInfo(model="Jetson Orin", memory_bytes=0),
        GpuInfo(model="Odd, Name, With Commas", memory_bytes=1024 * _MIB),
    ]


def test_hung_nvidia_smi_times_out_with_no_gpus(
    fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quackmesh.node.hardware.NVIDIA_SMI_TIMEOUT_S", 0.3)
    _fake_tool(fake_bin, "nvidia-smi", "exec sleep 30\n")
    assert detect_gpus() == []


def test_without_an_nvidia_driver_torch_is_never_imported(
    fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle node on a machine without the driver must not pay torch's import."""
    from quackmesh.node import hardware

    monkeypatch.setenv("PATH", str(fake_bin))
    monkeypatch.setattr(hardware, "NVIDIA_DRIVER", str(fake_bin / "no-driver-here"))
    imported: list[str] = []
    monkeypatch.setattr(hardware.importlib, "import_module", lambda name: imported.append(name))
    assert detect_gpus() == []
    assert imported == []
