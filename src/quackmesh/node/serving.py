"""Serving models for the inference marketplace: the node side of issue 6.

A node started with ``--serve MODEL=BACKEND`` owns a :class:`ServingPool`. For each model
the pool keeps one **child process** that loads the backend once and then answers
requests (:mod:`quackmesh.inference.worker`: JSON lines over stdin/stdout), and one
**worker thread** that long-polls the coordinator for that model's work and relays it::

    coordinator ──POST /v1/inference/lease (signed)──▶ worker thread ──JSON line──▶ child
    coordinator ◀──POST /v1/inference/{id}/stream──── worker thread ◀──chunk lines── child
                   (one request; NDJSON body sent as the chunks come; Bearer work.token)

Why a persistent child per model rather than threads in the agent or a process per
request: a model loads once (seconds for MiniLM, minutes for a large LM) yet still runs
under resource limits set between fork and exec like the task sandbox (``RLIMIT_AS``,
``RLIMIT_NOFILE``, ``RLIMIT_FSIZE``, ``RLIMIT_CORE``; not ``RLIMIT_CPU``, which would add
up across requests: each request's deadline bounds it instead); it starts with the
sandbox's minimal environment, so the wallet's key and the agent's settings never reach
the process that parses model files; a crash or an out-of-memory kill takes down only
that model, which is restarted with backoff; and :meth:`ServingPool.stop` can always end
it. The pipes carry JSON only — request inputs are data, never code, never pickles.

Deadlines are enforced twice: the child stops generating once ``work.deadline_s`` has
passed, and the worker thread answers an ``error`` chunk a moment later if the child has
not, then kills and restarts it. A coordinator that is down is retried with doubling
backoff (at most ``backoff_max_s``). Progress lines go to ``emit`` like the agent's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from quackmesh.core.errors import QuackMeshError, RateLimited
from quackmesh.core.inference_schemas import (
    InferenceChunk,
    InferenceLease,
    InferenceWork,
    ServedModel,
)
from quackmesh.core.wallet import Wallet
from quackmesh.inference.backends import BackendError, ModelInfo, ServeSpec
from quackmesh.inference.base import Interrupted
from quackmesh.node.model_process import DEFAULT_MEMORY_MB, ModelProcess, error_line
from quackmesh.sdk.client import SignedAuth, raise_for_problem
from quackmesh.workloads.infer_generate import Completion

__all__ = ["DEFAULT_MEMORY_MB", "ModelProcess", "ServingPool"]

log = logging.getLogger("quackmesh.node.serving")


@dataclass
class _Slot:
    spec: ServeSpec
    process: ModelProcess
    thread: threading.Thread | None = None
    served: ServedModel | None = None
    busy: threading.Event = field(default_factory=threading.Event)  # answering work now
    use: threading.Lock = field(default_factory=threading.Lock)  # one request at a time


@dataclass
class _Tally:
    deltas: int = 0
    tokens: int = 0
    last: InferenceChunk | None = None

    def add(self, chunk: InferenceChunk) -> None:
        if chunk.type == "delta":
            self.deltas += 1
            self.tokens += len(chunk.token_ids)
        else:
            self.last = chunk


class ServingPool:
    """The models a node serves: their child processes and the threads that relay work.

    ``load()`` starts every child (in parallel) and returns the :class:`ServedModel`
    list the node registers with; ``start()`` starts the worker threads (after the node
    is registered); ``stop()`` ends everything within about ``grace_s`` + 2 s.
    ``transport`` is handed to both HTTP clients (tests run against an in-process app).
    """

    def __init__(
        self,
        specs: Sequence[ServeSpec],
        *,
        coordinator: str,
        wallet: Wallet,
        transport: httpx.BaseTransport | None = None,
        emit: Callable[[str], None] | None = None,
        workdir: Path,
        lease_wait_s: float = 20.0,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        threads: int | None = None,
        load_timeout_s: float = 600.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        names = [s.model for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("a model is named twice in the serve specs")
        self.coordinator = coordinator
        self.wallet = wallet
        self.transport = transport
        self.lease_wait_s = lease_wait_s
        self.load_timeout_s = load_timeout_s
        self.backoff_max_s = backoff_max_s
        self._emit = emit or (lambda msg: log.info(msg))
        per_model = threads or max(1, (os.cpu_count() or 1) // max(1, len(specs)))
        self._slots = [
            _Slot(
                spec=s,
                process=ModelProcess(s, workdir=workdir, memory_mb=memory_mb, threads=per_model),
            )
            for s in specs
        ]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answered = 0  # work answered with done
        self.failed = 0  # work answered with error

    @property
    def models(self) -> list[ServedModel]:
        """What the node advertises; empty until :meth:`load`."""
        return [slot.served for slot in self._slots if slot.served is not None]

    def load(self, *, cancel: threading.Event | None = None) -> list[ServedModel]:
        """Load every model; raises :class:`BackendError` (and stops the rest) if one fails
        or when ``cancel`` is set meanwhile (the node is stopping)."""
        stop = (self._stop,) if cancel is None else (self._stop, cancel)
        for slot in self._slots:
            self._emit(f"loading model {slot.spec.model} ({slot.spec.backend})")
            slot.process.spawn()
        try:
            for slot in self._slots:
                info = slot.process.wait_ready(timeout_s=self.load_timeout_s, stop=stop)
                slot.served = self._served(slot, info)
                dims = f", {info.dims} dims" if info.dims else ""
                self._emit(
                    f"model {slot.spec.model} ready in {slot.process.load_s:.1f}s: {info.task}"
                    f"{dims}, context {info.context_len} tokens"
                )
        except BackendError:
            for slot in self._slots:
                slot.process.kill()
            raise
        return self.models

    @staticmethod
    def _served(slot: _Slot, info: ModelInfo) -> ServedModel:
        return ServedModel(
            name=slot.spec.model,
            task=info.task,
            price=slot.spec.price,
            context_len=info.context_len,
            dims=info.dims,
        )

    def start(self) -> None:
        """Start one worker thread per model (call after the node has registered)."""
        for slot in self._slots:
            if slot.thread is None:
                slot.thread = threading.Thread(
                    target=self._serve, args=(slot,), name=f"serve-{slot.spec.model}", daemon=True
                )
                slot.thread.start()

    def stop(self, *, grace_s: float = 10.0) -> None:
        """Stop leasing; give answers in flight up to ``grace_s`` to finish, then kill the
        children (an answer still running ends with an ``error`` chunk). Returns within
        about ``grace_s`` + 2 s. A thread waiting in a long-poll is not waited for: it
        exits when the poll returns, refusing any work it got with an ``error`` chunk."""
        self._stop.set()
        deadline = time.monotonic() + grace_s
        while any(slot.busy.is_set() for slot in self._slots) and time.monotonic() < deadline:
            time.sleep(0.02)
        for slot in self._slots:
            slot.process.kill()
        for slot in self._slots:
            if slot.thread is not None and slot.busy.is_set():
                slot.thread.join(timeout=0.5)  # its answer is ending with an error chunk

    def generation_models(self) -> list[str]:
        """Names of the loaded models that generate text (what ``infer.generate`` needs)."""
        return [m.name for m in self.models if m.task == "generate"]

    def complete(
        self,
        model: str,
        op: str,
        data: dict[str, Any],
        *,
        request_id: str,
        deadline_s: float,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """One greedy ``chat``/``complete`` request to ``model``'s process, for a batch job
        (``infer.generate``): the whole answer, or :class:`BackendError` naming what failed.

        Requests share the process with live gateway work, one at a time; ``cancel`` stops
        the request between tokens.
        """
        slot = next((s for s in self._slots if s.spec.model == model), None)
        if slot is None or slot.served is None:
            raise BackendError(f"this node does not serve model {model!r}")
        if slot.served.task != "generate":
            raise BackendError(f"model {model!r} embeds text; it does not generate")
        if op not in ("chat", "complete"):
            raise BackendError(f"unknown op {op!r}; expected chat or complete")
        work = InferenceWork(
            id=request_id,
            token="local",
            model=model,
            op="chat" if op == "chat" else "complete",
            input=data,
            deadline_s=max(0.0, deadline_s),
        )
        text: list[str] = []
        token_ids: list[int] = []
        with slot.use:
            if not slot.process.alive:  # the worker thread restarts it; this task fails over
                raise BackendError(f"the serving process of {model} is down")
            chunks = slot.process.run(work)
            try:
                for chunk in chunks:
                    if cancel is not None and cancel.is_set():
                        raise Interrupted("the task was cancelled")
                    if chunk.type == "delta":
                        text.append(chunk.text)
                        token_ids.extend(chunk.token_ids)
                        continue
                    if chunk.type == "error":
                        raise BackendError(chunk.message or "the model failed")
                    usage = chunk.usage
                    return Completion(
                        text="".join(text),
                        token_ids=tuple(token_ids),
                        finish_reason=chunk.finish_reason or "stop",
                        prompt_tokens=usage.prompt_tokens if usage else 0,
                        completion_tokens=usage.completion_tokens if usage else len(token_ids),
                    )
            finally:
                chunks.close()  # an early end cancels the request in the child
        raise BackendError("the serving process ended the answer without a done chunk")

    # --- worker threads ------------------------------------------------------------------
    def _serve(self, slot: _Slot) -> None:
        name = slot.spec.model
        lease_http = httpx.Client(
            base_url=self.coordinator, auth=SignedAuth(self.wallet), transport=self.transport
        )
        stream_http = httpx.Client(
            base_url=self.coordinator,
            transport=self.transport,
            timeout=httpx.Timeout(60.0, connect=10.0),
        )
        delay = 0.0
        try:
            while not self._stop.is_set():
                if not slot.process.alive and not self._restart(slot):
                    continue  # _restart waited
                try:
                    work = self._lease(lease_http, name)
                except RateLimited as exc:
                    self._stop.wait(min(float(exc.retry_after), self.backoff_max_s))
                    continue
                except (httpx.HTTPError, QuackMeshError, ValueError) as exc:
                    delay = self._backoff(delay)
                    self._emit(f"inference lease for {name} failed ({exc}); retry in {delay:.1f}s")
                    self._stop.wait(delay)
                    continue
                delay = 0.0
                if work is not None:
                    slot.busy.set()
                    try:
                        self._answer(slot, work, stream_http)
                    finally:
                        slot.busy.clear()
        except Exception:  # a bug here must not kill the thread silently
            log.exception("serving thread for %s failed", name)
        finally:
            lease_http.close()
            stream_http.close()

    def _backoff(self, delay: float) -> float:
        return min(self.backoff_max_s, max(0.5, delay * 2))

    def _restart(self, slot: _Slot) -> bool:
        self._emit(f"model {slot.spec.model}: serving process is down; restarting it")
        try:
            slot.process.start(timeout_s=self.load_timeout_s, stop=(self._stop,))
        except BackendError as exc:
            self._emit(f"model {slot.spec.model}: restart failed: {exc.detail}")
            self._stop.wait(self.backoff_max_s)
            return False
        return True

    def _lease(self, http: httpx.Client, model: str) -> InferenceWork | None:
        body = InferenceLease(models=[model], wait_s=self.lease_wait_s)
        response = http.post(
            "/v1/inference/lease",
            json=body.model_dump(mode="json"),
            timeout=self.lease_wait_s + 30.0,
        )
        raise_for_problem(response)
        data = response.json()
        return None if data is None else InferenceWork.model_validate(data)

    def _answer(self, slot: _Slot, work: InferenceWork, http: httpx.Client) -> None:
        started = time.monotonic()
        tally = _Tally()
        if self._stop.is_set():
            chunks = _once(error_line("the node is shutting down"))
        elif work.model != slot.spec.model:
            chunks = _once(error_line(f"this worker serves {slot.spec.model}, not {work.model}"))
        else:
            chunks = slot.process.run(work)
        body = _ndjson(chunks, tally)
        path = f"/v1/inference/{urllib.parse.quote(work.id, safe='')}/stream"
        try:
            with slot.use:  # a batch job's prompt may hold the process: wait for it
                response = http.post(
                    path,
                    content=body,
                    headers={
                        "authorization": f"Bearer {work.token}",
                        "content-type": "application/x-ndjson",
                    },
                )
        except httpx.HTTPError as exc:
            self._emit(f"{work.id}: could not stream the answer ({exc})")
            return
        finally:
            body.close()
        if not response.is_success:
            self._emit(
                f"{work.id}: coordinator refused the answer: HTTP {response.status_code}"
                f" {response.text[:200]}"
            )
            return
        self._tally(work, tally, time.monotonic() - started)

    def _tally(self, work: InferenceWork, tally: _Tally, elapsed: float) -> None:
        last = tally.last
        if last is None or last.type == "error":
            with self._lock:
                self.failed += 1
            message = last.message if last is not None else "no answer"
            self._emit(f"{work.id}: {work.op} on {work.model} failed: {message}")
            return
        with self._lock:
            self.answered += 1
        if work.op == "embed":
            count = len(last.embeddings or [])
            self._emit(f"{work.id}: embedded {count} text(s) with {work.model} in {elapsed:.2f}s")
            return
        tokens = last.usage.completion_tokens if last.usage else tally.tokens
        rate = tokens / elapsed if elapsed > 0 else 0.0
        self._emit(
            f"{work.id}: {work.op} on {work.model}: {tokens} tokens in {elapsed:.2f}s"
            f" ({rate:.0f} tokens/s, {last.finish_reason})"
        )


def _once(chunk: InferenceChunk) -> Generator[InferenceChunk, None, None]:
    yield chunk


def _ndjson(
    chunks: Generator[InferenceChunk, None, None], tally: _Tally
) -> Generator[bytes, None, None]:
    """The stream body: one compact JSON line per chunk, sent as each one comes."""
    try:
        for chunk in chunks:
            tally.add(chunk)
            yield chunk.model_dump_json(exclude_defaults=True).encode() + b"\n"
    finally:
        chunks.close()  # an early end (the upload failed) cancels the request in the child
