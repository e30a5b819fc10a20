"""The serving child process: loads one backend once and answers requests as JSON lines.

Usage (started by :mod:`quackmesh.node.serving`, never by hand)::

    python -P -m quackmesh.inference.worker --spec '{"model": "tiny", "kind": "hf", ...}'

Protocol, one JSON object per line (data only: nothing read here is code or a pickle)::

    stdin  {"type": "run", "id": ID, "op": OP, "input": {...}, "deadline_s": SECONDS}
           {"type": "cancel", "id": ID}          stop that request at its next token
    stdout {"type": "ready", "info": {"task", "context_len", "dims"}, "load_s": SECONDS}
           {"type": "fatal", "message": TEXT}    the backend did not load; exit code 1
           {"type": "chunk", "id": ID, "chunk": InferenceChunk}

The first stdout line is ``ready`` or ``fatal``. Each request is answered by ``chunk``
lines, the last a ``done`` or ``error`` chunk; requests run one at a time, in order. End
of stdin ends the process (exit code 0). The real stdout is kept for the protocol alone:
file descriptor 1 is pointed at stderr, so a library that prints cannot corrupt it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from quackmesh.inference.backends import Backend, ServeSpec, load_backend
from quackmesh.inference.base import Interrupted, error_chunk

__all__ = ["main"]


class _Current:
    """The request being answered and the ids cancelled before their turn."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.id: str | None = None
        self.cancel = threading.Event()
        self.cancelled: set[str] = set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quackmesh.inference.worker")
    parser.add_argument("--spec", required=True, help="the ServeSpec as a JSON object")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    out = _protocol_stdout()
    started = time.monotonic()
    try:
        spec = ServeSpec(**json.loads(args.spec))
        backend = load_backend(spec, threads=args.threads)
    except BaseException as exc:  # MemoryError under the address-space limit included
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        _send(out, {"type": "fatal", "message": error_chunk(exc).message})
        return 1
    info = dataclasses.asdict(backend.info)
    _send(out, {"type": "ready", "info": info, "load_s": time.monotonic() - started})
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    current = _Current()
    reader = threading.Thread(target=_read, args=(requests, current), daemon=True)
    reader.start()
    try:
        while (request := requests.get()) is not None:
            _answer(backend, request, current, out)
    finally:
        backend.close()
    return 0


def _protocol_stdout() -> IO[str]:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # stray prints (C or Python) land on stderr, not in the protocol
    sys.stdout = sys.stderr
    return out


def _send(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":"), ensure_ascii=False) + "\n")
    out.flush()


def _read(requests: queue.Queue[dict[str, Any] | None], current: _Current) -> None:
    for line in sys.stdin:
        try:
            message = json.loads(line)
        except ValueError:
            print(f"worker: ignored a malformed line: {line[:200]!r}", file=sys.stderr)
            continue
        if not isinstance(message, dict):
            continue
        if message.get("type") == "cancel":
            with current.lock:
                if message.get("id") == current.id:
                    current.cancel.set()
                else:
                    current.cancelled.add(str(message.get("id")))
        elif message.get("type") == "run":
            requests.put(message)
    current.cancel.set()  # the parent is gone: stop what runs, answer nothing more
    requests.put(None)


def _answer(backend: Backend, request: dict[str, Any], current: _Current, out: IO[str]) -> None:
    work_id = str(request.get("id", ""))
    with current.lock:
        current.id = work_id
        current.cancel.clear()
        skip = work_id in current.cancelled
        current.cancelled.discard(work_id)
    raw_deadline = request.get("deadline_s")
    deadline_s = float(raw_deadline) if isinstance(raw_deadline, int | float) else 60.0
    deadline = time.monotonic() + deadline_s

    def stop() -> str | None:
        if current.cancel.is_set():
            return "cancelled"
        if time.monotonic() > deadline:
            return f"deadline of {deadline_s:g} s exceeded"
        return None

    try:
        if skip:
            chunk = error_chunk(Interrupted("cancelled before it started"))
            _send(out, {"type": "chunk", "id": work_id, "chunk": chunk.model_dump(mode="json")})
            return
        data = request.get("input")
        chunks = backend.answer(
            str(request.get("op")), data if isinstance(data, dict) else {}, stop=stop
        )
        for chunk in chunks:
            body = chunk.model_dump(mode="json", exclude_defaults=True)
            _send(out, {"type": "chunk", "id": work_id, "chunk": body})
    finally:
        with current.lock:
            current.id = None


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    # Skip interpreter finalisation: tearing down torch and its thread pools takes a
    # second or more, and the parent waits for the exit; the pipes are already flushed.
    os._exit(code)
