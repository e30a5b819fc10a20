"""Run one task in a sandboxed child process with wall-clock, CPU and memory limits.

The child is ``python -m quackmesh.node.task_main`` (see that module for its exit codes),
started in a new session so that it and everything it spawns form one process group,
with a minimal environment and POSIX resource limits set between fork and exec
(``setrlimit(2)``): ``RLIMIT_AS`` for memory, ``RLIMIT_CPU`` for CPU seconds (SIGXCPU at
the soft limit, SIGKILL two seconds later), ``RLIMIT_FSIZE``, ``RLIMIT_CORE`` and
``RLIMIT_NOFILE``. The wall clock is enforced here by a poll loop that also watches a
cancel event; on a timeout or a cancel the whole process group is killed. The group is
killed after a normal exit too, so a workload cannot leave processes behind (one that
calls ``setsid()`` itself escapes the group; only a PID namespace or cgroup stops that).

When running as root and ``unshare`` (util-linux) is available, ``isolate_network=True``
starts the child in a fresh network namespace (``unshare --net``) with no interfaces up:
it cannot reach the network, loopback included.

stderr goes to a file in the work directory rather than a pipe, so a chatty child cannot
block on a full pipe; only its tail is read back for the failure detail.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quackmesh.core.errors import QuackMeshError
from quackmesh.core.schemas import FailureReason, TaskLimits
from quackmesh.node.task_main import ExitCode

__all__ = [
    "DETAIL_MAX_CHARS",
    "FSIZE_LIMIT_BYTES",
    "NOFILE_LIMIT",
    "OUTPUT_NAME",
    "PARAMS_NAME",
    "STDERR_NAME",
    "SandboxError",
    "SandboxOutcome",
    "apply_rlimits",
    "child_env",
    "network_isolation_available",
    "run_task",
]

OUTPUT_NAME = "result.json"  # written by the child into the work directory
PARAMS_NAME = "params.json"
STDERR_NAME = "task.stderr"
DETAIL_MAX_CHARS = 2000
FSIZE_LIMIT_BYTES = 1 << 30  # largest file the child may write
NOFILE_LIMIT = 256
CPU_HARD_GRACE_S = 2  # SIGKILL this long after SIGXCPU if the child ignores SIGXCPU
_MIB = 1024 * 1024
_POLL_MIN_S = 0.005
_POLL_MAX_S = 0.05
# Measured CPU time (rusage) can trail the kernel's own accounting by a tick or two.
_CPU_TOLERANCE = 0.95
# Lower-case text in stderr that means an allocation failed below Python: C++ extensions,
# jemalloc (pyarrow), and dlopen() of a shared library when RLIMIT_AS leaves no room.
_OOM_MARKERS = (
    "memoryerror",
    "std::bad_alloc",
    "cannot allocate memory",
    "out of memory",
    "failed to map segment from shared object",
)


class SandboxError(QuackMeshError):
    """The sandbox could not be set up as asked (e.g. network isolation unavailable)."""

    code, title = "sandbox_error", "Sandbox unavailable"


@dataclass(frozen=True)
class SandboxOutcome:
    """What happened to one sandboxed task.

    ``output_path`` is set only when ``ok``; ``reason`` is ``None`` when ``ok`` or
    ``cancelled``; ``detail`` is human-readable (the stderr tail on failures), at most
    :data:`DETAIL_MAX_CHARS` characters; ``cpu_s`` is user + system time of the child.
    """

    ok: bool
    output_path: Path | None
    reason: FailureReason | None
    detail: str
    elapsed_s: float
    cpu_s: float
    cancelled: bool = False


@functools.cache
def network_isolation_available() -> bool:
    """True when ``unshare --net`` works here (root, util-linux, namespaces allowed)."""
    exe = shutil.which("unshare")
    if exe is None or os.geteuid() != 0:
        return False
    try:
        proc = subprocess.run(
            [exe, "--net", "--", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def run_task(
    *,
    kind: str,
    params: dict[str, Any],
    inputs: Mapping[str, Path],
    workdir: Path,
    limits: TaskLimits,
    threads: int = 1,
    cancel: threading.Event | None = None,
    extra_env: Mapping[str, str] | None = None,
    isolate_network: bool = False,
) -> SandboxOutcome:
    """Run workload ``kind`` on ``inputs`` in a child process confined by ``limits``.

    ``workdir`` (created if missing) becomes the child's cwd, HOME and TMPDIR and
    receives ``params.json``, ``task.stderr`` and, on success, ``result.json``.
    ``threads`` caps the BLAS/OpenMP thread pools. Setting ``cancel`` kills the task
    (the outcome then has ``cancelled=True``). ``extra_env`` is added to the child's
    minimal environment (e.g. ``QUACKMESH_WORKLOAD_MODULES``, ``PYTHONPATH``).
    Raises :class:`SandboxError` when ``isolate_network`` is asked for but unavailable,
    and ``OSError`` when the child cannot be started at all. Blocks until the child is
    gone: call it from a worker thread (``asyncio.to_thread``) in an event loop.
    """
    if threads < 1:
        raise ValueError("threads must be >= 1")
    prefix: list[str] = []
    if isolate_network:
        if not network_isolation_available():
            raise SandboxError("network isolation needs root and a working `unshare --net`")
        prefix = [shutil.which("unshare") or "unshare", "--net", "--"]

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    params_path = workdir / PARAMS_NAME
    output_path = workdir / OUTPUT_NAME
    stderr_path = workdir / STDERR_NAME
    params_path.write_text(json.dumps(params), encoding="utf-8")
    output_path.unlink(missing_ok=True)

    cmd = [
        *prefix,
        sys.executable,
        "-P",  # do not put the cwd (the work directory, holding inputs) on sys.path
        "-m",
        "quackmesh.node.task_main",
        f"--kind={kind}",
        f"--params-file={params_path}",
        *(f"--input={name}={Path(path).resolve()}" for name, path in inputs.items()),
        f"--output={output_path}",
    ]
    env = child_env(workdir=workdir, threads=threads, extra_env=extra_env)
    cpu_soft = max(1, math.ceil(limits.cpu_s))
    preexec = functools.partial(
        apply_rlimits, _rlimits(memory_mb=limits.memory_mb, cpu_soft_s=cpu_soft)
    )

    start = time.monotonic()
    with open(stderr_path, "wb") as stderr_file:
        # preexec_fn runs between fork and exec; it only calls setrlimit() with values
        # computed here, so it takes no locks another thread of the agent could hold.
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            start_new_session=True,
            preexec_fn=preexec,
            close_fds=True,
        )
    stopped_by, status, rusage = _supervise(proc, wall_s=limits.wall_s, cancel=cancel)
    elapsed_s = time.monotonic() - start
    cpu_s = rusage.ru_utime + rusage.ru_stime

    def failed(reason: FailureReason, detail: str) -> SandboxOutcome:
        return SandboxOutcome(
            ok=False,
            output_path=None,
            reason=reason,
            detail=_detail(detail, stderr_path),
            elapsed_s=elapsed_s,
            cpu_s=cpu_s,
        )

    if stopped_by == "cancel":
        return SandboxOutcome(
            ok=False,
            output_path=None,
            reason=None,
            detail="cancelled",
            elapsed_s=elapsed_s,
            cpu_s=cpu_s,
            cancelled=True,
        )
    if stopped_by == "timeout":
        return failed("timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = _signal_name(sig)
        # Only the kernel's RLIMIT_CPU sends SIGXCPU here; its accounting can read a little
        # below the limit in rusage on a busy machine, so SIGXCPU alone decides. A SIGKILL
        # (the hard limit, after the grace) needs the CPU time to show it.
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= _CPU_TOLERANCE * cpu_soft):
            return failed("cpu_limit", f"CPU limit of {cpu_soft} s exceeded ({name})")
        if _mentions_oom(stderr_path):
            return failed("memory_limit", f"killed by {name} after an allocation failure")
        return failed("crash", f"killed by {name}")
    code = os.WEXITSTATUS(status)
    if code == ExitCode.OUT_OF_MEMORY:
        return failed("memory_limit", f"memory limit of {limits.memory_mb} MB reached")
    if code == ExitCode.BAD_INPUT:
        return failed("input_error", "bad spec or input")
    if code == ExitCode.BAD_OUTPUT:
        return failed("output_error", "result could not be written")
    if code != ExitCode.OK:
        if _mentions_oom(stderr_path):
            return failed("memory_limit", f"exit code {code} after an allocation failure")
        if code == ExitCode.FAILED:
            return failed("crash", f"the workload raised an exception (exit code {code})")
        return failed("crash", f"exit code {code}")
    problem = _check_output(output_path)
    if problem is not None:
        return failed("output_error", problem)
    return SandboxOutcome(
        ok=True,
        output_path=output_path,
        reason=None,
        detail="",
        elapsed_s=elapsed_s,
        cpu_s=cpu_s,
    )


def child_env(
    *, workdir: Path, threads: int, extra_env: Mapping[str, str] | None
) -> dict[str, str]:
    """A minimal environment: nothing of the agent's (keys, tokens, proxies) leaks in."""
    parent = os.environ
    n = str(threads)
    env = {
        "PATH": parent.get("PATH", os.defpath),
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": parent.get("LANG", "C.UTF-8"),
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        # Idle OpenMP threads sleep instead of spinning: concurrent tasks on a node (or
        # several nodes on one machine) otherwise burn each other's cores.
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # glibc reserves 64 MiB of address space per malloc arena (one per thread); under
        # RLIMIT_AS that reservation, not real use, would otherwise exhaust the limit.
        "MALLOC_ARENA_MAX": "2",
        # pyarrow's default mimalloc pool reserves ~1 GiB of address space on first use;
        # with torch loaded that alone would pass a 2 GiB RLIMIT_AS (federated tasks).
        "ARROW_DEFAULT_MEMORY_POOL": "system",
    }
    for key in ("QUACKMESH_WORKLOAD_MODULES", "PYTHONPATH"):
        if key in parent:
            env[key] = parent[key]
    if extra_env:
        env.update(extra_env)
    return env


def _rlimits(*, memory_mb: int, cpu_soft_s: int) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) triples, clamped to the hard limits this process already has.

    An unprivileged process cannot raise a hard limit, so asking for more than the agent
    itself has would make ``setrlimit`` fail in the child; the tighter limit wins.
    """
    memory_bytes = memory_mb * _MIB
    wanted = [
        (resource.RLIMIT_AS, memory_bytes, memory_bytes),
        (resource.RLIMIT_CPU, cpu_soft_s, cpu_soft_s + CPU_HARD_GRACE_S),
        (resource.RLIMIT_FSIZE, FSIZE_LIMIT_BYTES, FSIZE_LIMIT_BYTES),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, NOFILE_LIMIT, NOFILE_LIMIT),
    ]
    out = []
    for res, soft, hard in wanted:
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        out.append((res, soft, hard))
    return out


def apply_rlimits(limits: list[tuple[int, int, int]]) -> None:
    for res, soft, hard in limits:
        resource.setrlimit(res, (soft, hard))


def _supervise(
    proc: subprocess.Popen[bytes], *, wall_s: float, cancel: threading.Event | None
) -> tuple[str | None, int, resource.struct_rusage]:
    """Wait for the child within ``wall_s``, watching ``cancel``; always reap it.

    Returns why it was stopped (``"timeout"``, ``"cancel"`` or ``None`` when it exited
    by itself), its wait status and its resource usage. The process group is killed in
    every case, before the leader is reaped: while the leader is an unreaped zombie its
    pid cannot be reused, so ``killpg`` cannot hit an unrelated group.
    """
    pid = proc.pid
    deadline = time.monotonic() + wall_s
    sleeper = cancel if cancel is not None else threading.Event()
    stopped_by: str | None = None
    delay = _POLL_MIN_S
    try:
        while not _has_exited(pid):
            if cancel is not None and cancel.is_set():
                stopped_by = "cancel"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped_by = "timeout"
                break
            sleeper.wait(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX_S)
    finally:
        _kill_group(pid)
        _, status, rusage = _wait4(pid)
        # Tell Popen the child is reaped, so it neither waits again nor warns in __del__.
        proc.returncode = os.waitstatus_to_exitcode(status)
    return stopped_by, status, rusage


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the child a zombie: it is reaped only after its group is killed.
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _wait4(pid: int) -> tuple[int, int, resource.struct_rusage]:
    while True:
        try:
            return os.wait4(pid, 0)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
            continue


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # group already empty
        os.killpg(pgid, signal.SIGKILL)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _stderr_tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4 * limit))
            data = fh.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()[-limit:]


def _mentions_oom(stderr_path: Path) -> bool:
    tail = _stderr_tail(stderr_path, DETAIL_MAX_CHARS).lower()
    return any(marker in tail for marker in _OOM_MARKERS)


def _detail(summary: str, stderr_path: Path) -> str:
    """``summary`` plus as much of the stderr tail as fits in DETAIL_MAX_CHARS."""
    summary = summary[:DETAIL_MAX_CHARS]
    room = DETAIL_MAX_CHARS - len(summary) - 1
    tail = _stderr_tail(stderr_path, room) if room > 0 else ""
    return f"{summary}\n{tail}" if tail else summary


def _check_output(path: Path) -> str | None:
    """None when ``path`` holds a JSON object, else what is wrong with it."""
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return "exit code 0 but no output file was written"
    except (OSError, ValueError) as exc:
        return f"output is not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"output is a JSON {type(value).__name__}, not an object"
    return None
