"""Test workloads that misbehave on purpose, loaded in the sandboxed child.

The sandbox tests put this directory on the child's ``PYTHONPATH`` and name this module in
``QUACKMESH_WORKLOAD_MODULES``, so ``get_workload("test.sleep")`` etc. resolve inside the
child. None of them reads input files (``input_names = ()``).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from quackmesh.workloads import InputSummary, Workload, register

_MIB = 1024 * 1024


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TestWorkload(Workload[Any]):
    input_names: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = "misbehaving test workload"

    def check_inputs(self, spec: Any, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        return InputSummary(rows=0, columns=0, feature_names=(), format="csv")

    def cost(self, spec: Any, summary: InputSummary) -> int:
        return 1

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        return dict(a) == dict(b)


class EchoSpec(_Spec):
    value: str


@register
class Echo(_TestWorkload):
    """Well behaved: returns its param."""

    kind = "test.echo"
    spec_model = EchoSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        return {"echo": spec.value}


class SleepSpec(_Spec):
    seconds: float
    pid_file: str | None = None


@register
class Sleep(_TestWorkload):
    """Sleeps; with ``pid_file`` it first starts a ``sleep 60`` grandchild and records its pid."""

    kind = "test.sleep"
    spec_model = SleepSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        if spec.pid_file:
            child = subprocess.Popen(["sleep", "60"])
            Path(spec.pid_file).write_text(str(child.pid))
        time.sleep(spec.seconds)
        return {"slept": spec.seconds}


class BusySpec(_Spec):
    ignore_sigxcpu: bool = False


@register
class Busy(_TestWorkload):
    """Spins forever; optionally ignores SIGXCPU so only the hard limit's SIGKILL stops it."""

    kind = "test.busy"
    spec_model = BusySpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        if spec.ignore_sigxcpu:
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        n = 0
        while True:
            n += 1


class AllocSpec(_Spec):
    mb: int


@register
class Alloc(_TestWorkload):
    """Allocates ``mb`` MiB at once."""

    kind = "test.alloc"
    spec_model = AllocSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        block = bytearray(spec.mb * _MIB)
        return {"allocated": len(block)}


class CrashSpec(_Spec):
    mode: Literal["exit", "raise", "abort", "chatty"]


@register
class Crash(_TestWorkload):
    """Dies: ``os._exit(7)``, an exception, ``abort()``, or 1 MiB of stderr then an exception."""

    kind = "test.crash"
    spec_model = CrashSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        if spec.mode == "exit":
            os._exit(7)
        if spec.mode == "abort":
            os.abort()
        if spec.mode == "chatty":
            line = "x" * 1023 + "\n"
            for _ in range(1024):
                sys.stderr.write(line)
            sys.stderr.flush()
        raise RuntimeError("deliberate failure in test.crash")


class NoOutputSpec(_Spec):
    mode: Literal["missing", "garbage"]


@register
class NoOutput(_TestWorkload):
    """Exits 0 without a valid result (the sandbox's output file is ``result.json`` in cwd)."""

    kind = "test.no_output"
    spec_model = NoOutputSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        if spec.mode == "garbage":
            Path("result.json").write_text("{not json")
        os._exit(0)


class ConnectSpec(_Spec):
    port: int


@register
class Connect(_TestWorkload):
    """Tries a TCP connection to 127.0.0.1:``port``."""

    kind = "test.connect"
    spec_model = ConnectSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        try:
            with socket.create_connection(("127.0.0.1", spec.port), timeout=3):
                return {"connected": True, "error": ""}
        except OSError as exc:
            return {"connected": False, "error": str(exc)}


class InspectSpec(_Spec):
    libraries: list[str] = []


@register
class Inspect(_TestWorkload):
    """Reports the child's environment, cwd, session, resource limits and loaded ``libraries``."""

    kind = "test.inspect"
    spec_model = InspectSpec

    def run(self, spec: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
        limits = {
            name: list(resource.getrlimit(getattr(resource, name)))
            for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NOFILE")
        }
        return {
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "is_session_leader": os.getsid(0) == os.getpid(),
            "limits": limits,
            "sys_path_has_cwd": os.getcwd() in sys.path or "" in sys.path,
            "loaded": sorted({name.split(".")[0] for name in sys.modules} & set(spec.libraries)),
        }
