"""The serving child process of one model, seen from the node: spawn, talk, kill.

:class:`ModelProcess` starts ``python -m quackmesh.inference.worker`` (the protocol is
documented there) with the task sandbox's minimal environment and resource limits, less
``RLIMIT_CPU`` (see :mod:`quackmesh.node.serving` for why), reads its stdout on a thread
into a queue, and turns each request into an iterator of
:class:`~quackmesh.core.inference_schemas.InferenceChunk` with bounded waits: a dead child
or a missed deadline becomes an ``error`` chunk, never an exception or a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import IO, Any

from quackmesh.core.inference_schemas import InferenceChunk, InferenceWork
from quackmesh.inference.backends import BackendError, ModelInfo, ServeSpec
from quackmesh.node.sandbox import (
    FSIZE_LIMIT_BYTES,
    NOFILE_LIMIT,
    apply_rlimits,
    child_env,
)

__all__ = ["DEFAULT_MEMORY_MB", "ModelProcess", "error_line"]

log = logging.getLogger("quackmesh.node.serving")

DEFAULT_MEMORY_MB = 16_384  # address space of one serving child (torch reserves plenty)
_MIB = 1024 * 1024
_DRAIN_S = 5.0  # after a cancel, how long the child has to finish its answer
_STDERR_TAIL = 1500


def error_line(message: str) -> InferenceChunk:
    """An ``error`` chunk with ``message`` (cut to the protocol's 2,000 characters)."""
    return InferenceChunk(type="error", message=message[:2000])


def _serving_rlimits(memory_mb: int | None) -> list[tuple[int, int, int]]:
    """The task sandbox's limits less ``RLIMIT_CPU`` (see :mod:`quackmesh.node.serving`)."""
    wanted = [
        (resource.RLIMIT_FSIZE, FSIZE_LIMIT_BYTES, FSIZE_LIMIT_BYTES),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, NOFILE_LIMIT, NOFILE_LIMIT),
    ]
    if memory_mb is not None:
        wanted.append((resource.RLIMIT_AS, memory_mb * _MIB, memory_mb * _MIB))
    out = []
    for res, soft, hard in wanted:
        _, current_hard = resource.getrlimit(res)
        if current_hard != resource.RLIM_INFINITY:  # a child cannot raise a hard limit
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        out.append((res, soft, hard))
    return out


class ModelProcess:
    """One serving child: spawn it, wait for its model, send requests, read the chunks.

    Used by one worker thread at a time (requests are answered in order); :meth:`kill`
    may be called from any thread.
    """

    def __init__(
        self,
        spec: ServeSpec,
        *,
        workdir: Path,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        threads: int = 1,
    ) -> None:
        self.spec = spec
        self.workdir = workdir
        self.memory_mb = memory_mb
        self.threads = threads
        self.info: ModelInfo | None = None
        self.load_s = 0.0
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr_path = workdir / (re.sub(r"[^A-Za-z0-9._-]", "_", spec.model) + ".stderr")

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self.info is not None

    def start(self, *, timeout_s: float, stop: Sequence[threading.Event] = ()) -> ModelInfo:
        """Spawn the child and wait (at most ``timeout_s``) until its model is loaded.

        Raises :class:`BackendError` with the child's reason when it does not load.
        """
        self.spawn()
        return self.wait_ready(timeout_s=timeout_s, stop=stop)

    def spawn(self) -> None:
        self.kill()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.info = None
        self._lines = queue.Queue()
        spec_json = json.dumps(dataclasses.asdict(self.spec))
        cmd = [
            sys.executable,
            "-P",  # the work directory is not on sys.path
            "-m",
            "quackmesh.inference.worker",
            f"--spec={spec_json}",
            f"--threads={self.threads}",
        ]
        extra = {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        if "QUACKMESH_OPENAI_API_KEY" in os.environ:  # for openai: backends only
            extra["QUACKMESH_OPENAI_API_KEY"] = os.environ["QUACKMESH_OPENAI_API_KEY"]
        env = child_env(workdir=self.workdir, threads=self.threads, extra_env=extra)
        preexec = functools.partial(apply_rlimits, _serving_rlimits(self.memory_mb))
        with open(self._stderr_path, "ab") as stderr_file:
            # preexec_fn only calls setrlimit() with values computed here (no locks taken).
            proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
                encoding="utf-8",
                bufsize=1,
                start_new_session=True,
                preexec_fn=preexec,
                close_fds=True,
            )
        self._proc = proc
        threading.Thread(
            target=self._read,
            args=(proc, self._lines),
            name=f"serve-read-{self.spec.model}",
            daemon=True,
        ).start()

    def wait_ready(self, *, timeout_s: float, stop: Sequence[threading.Event] = ()) -> ModelInfo:
        """Wait for the child's ``ready`` line; setting any of ``stop`` gives up at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            if any(event.is_set() for event in stop):
                self.kill()
                raise BackendError(f"model {self.spec.model}: stopped while loading")
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BackendError(f"model {self.spec.model}: not loaded within {timeout_s:g} s")
            try:
                message = self._lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if message is None:
                why, tail = self._exit_text(), self.stderr_tail()
                self.kill()
                raise BackendError(
                    f"model {self.spec.model}: serving process exited while loading ({why}): {tail}"
                )
            if message.get("type") == "fatal":
                self.kill()
                raise BackendError(f"model {self.spec.model}: {message.get('message', '')}")
            if message.get("type") == "ready":
                info = message.get("info") or {}
                self.info = ModelInfo(
                    task=info["task"], context_len=int(info["context_len"]), dims=info.get("dims")
                )
                self.load_s = float(message.get("load_s") or 0.0)
                return self.info

    def run(self, work: InferenceWork) -> Generator[InferenceChunk, None, None]:
        """Answer ``work``: its chunks in order, the last ``done`` or ``error``.

        Never raises for the child's sake: a dead child or a missed deadline becomes an
        ``error`` chunk. Closing the iterator early cancels the request in the child.
        """
        proc = self._proc
        deadline_s = max(0.0, work.deadline_s)
        deadline = time.monotonic() + deadline_s + 1.0  # the child checks first, at deadline_s
        finished = False
        try:
            if proc is None or not self._write(
                {
                    "type": "run",
                    "id": work.id,
                    "op": work.op,
                    "input": work.input,
                    "deadline_s": deadline_s,
                }
            ):
                finished = True
                yield error_line(f"the serving process of {self.spec.model} is not running")
                return
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    finished = True
                    yield error_line(f"deadline of {deadline_s:g} s exceeded")
                    self._cancel(work.id)
                    return
                try:
                    message = self._lines.get(timeout=min(left, 0.5))
                except queue.Empty:
                    continue
                if message is None:
                    finished = True
                    # The stderr tail stays in the node's log: it may name local paths.
                    why = self._exit_text()
                    log.warning(
                        "serving process of %s exited (%s): %s",
                        self.spec.model,
                        why,
                        self.stderr_tail(),
                    )
                    yield error_line(f"the serving process of {self.spec.model} exited ({why})")
                    return
                if message.get("type") != "chunk" or message.get("id") != work.id:
                    continue  # the tail of an earlier, cancelled request
                try:
                    chunk = InferenceChunk.model_validate(message.get("chunk"))
                except ValueError as exc:
                    chunk = error_line(f"the serving process sent a malformed chunk: {exc}")
                finished = chunk.type != "delta"
                yield chunk
                if finished:
                    return
        finally:
            if not finished:  # closed early: the stream to the coordinator failed
                self._cancel(work.id)

    def _cancel(self, work_id: str) -> None:
        """Stop ``work_id`` in the child and wait for its last chunk; kill it if it hangs."""
        if not self._write({"type": "cancel", "id": work_id}):
            return
        deadline = time.monotonic() + _DRAIN_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if message is None:
                return
            chunk = message.get("chunk") or {}
            if message.get("id") == work_id and chunk.get("type") in ("done", "error"):
                return
        log.warning("serving process of %s did not stop %s; killing it", self.spec.model, work_id)
        self.kill()

    def _write(self, message: dict[str, Any]) -> bool:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return False
        try:
            proc.stdin.write(json.dumps(message, separators=(",", ":")) + "\n")
            proc.stdin.flush()
        except (OSError, ValueError):  # broken pipe, or closed by kill() meanwhile
            return False
        return True

    def kill(self) -> None:
        """End the child and its process group, then reap it.

        Closing stdin first lets the child exit by itself (within a second); the group is
        killed before the leader is reaped, as in the sandbox, so that ``killpg`` cannot
        reach an unrelated group that reused the pid.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and proc.returncode is None:
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    break  # exited; still a zombie, so its pid is not reused yet
            except ChildProcessError:  # reaped meanwhile by a poll() in another thread
                break
            time.sleep(0.02)
        if proc.returncode is None:  # not reaped yet by a poll() elsewhere
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10.0)

    def stderr_tail(self) -> str:
        """The end of what the child wrote to stderr (its log file), for messages."""
        try:
            with open(self._stderr_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4 * _STDERR_TAIL))
                data = fh.read()
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace").strip()[-_STDERR_TAIL:]

    def _exit_text(self) -> str:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        if code is None:
            return "stopped"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[dict[str, Any] | None]) -> None:
        stdout: IO[str] | None = proc.stdout
        try:
            if stdout is None:
                return
            for raw in stdout:
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.warning("serving process sent a malformed line: %r", raw[:200])
                    continue
                if isinstance(message, dict):
                    lines.put(message)
        except (OSError, ValueError):
            pass  # the pipe was closed under us
        finally:
            lines.put(None)
            if stdout is not None:
                with contextlib.suppress(OSError):
                    stdout.close()
