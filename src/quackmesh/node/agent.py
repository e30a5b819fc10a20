"""The provider agent: register, heartbeat, long-poll for leases, run tasks in the sandbox.

Threads: one heartbeat thread, one lease loop (the caller's thread), one worker thread per
running task (at most ``slots``). Shutdown has two steps, like ``docker stop``:
``drain`` stops leasing and lets running tasks finish; ``abort`` (or the drain timeout)
kills the sandboxes and hands their leases back so other nodes can take them at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from quackmesh import __version__
from quackmesh.core.canon import canonical_json, sha256_hex
from quackmesh.core.errors import LeaseLost, NodeNotFound, QuackMeshError, ValidationFailed
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import (
    INLINE_RESULT_MAX,
    Behaviour,
    FailureReason,
    HeartbeatCreate,
    NodeRegister,
    TaskLease,
    TaskReport,
)
from quackmesh.core.wallet import Wallet
from quackmesh.inference.backends import BackendError, ServeSpec
from quackmesh.inference.base import Interrupted
from quackmesh.node.datasets import DatasetEntry
from quackmesh.node.hardware import detect_hardware
from quackmesh.node.sandbox import SandboxOutcome, run_task
from quackmesh.node.serving import ServingPool
from quackmesh.sdk import Client
from quackmesh.workloads import get_workload, list_kinds
from quackmesh.workloads.infer_generate import Completion, InferGenerate
from quackmesh.workloads.registry import PROTOCOL_KINDS, SERVED_KINDS

__all__ = ["NodeAgent", "NodeConfig", "perturb"]

log = logging.getLogger("quackmesh.node")


@dataclass(frozen=True)
class NodeConfig:
    coordinator: str
    name: str
    price_per_unit: int
    slots: int = 1
    heartbeat_s: float = 5.0
    lease_wait_s: float = 20.0
    drain_timeout_s: float = 300.0
    workdir: Path | None = None
    isolate_network: bool = False
    workloads: tuple[str, ...] = ()
    region: str = ""
    price_per_hour: int = 0
    stake: int = 0  # at start, top the effective stake up to this (micro-DUCK)
    faucet: bool = False  # development mode: mint what the stake top-up needs
    behaviour: Behaviour = "honest"  # test networks only (the coordinator refuses others)
    datasets: Mapping[str, DatasetEntry] = field(default_factory=dict)  # name -> local file
    serve: Sequence[ServeSpec] = ()  # models served for inference (quackmesh.node.serving)
    serve_memory_mb: int | None = 16_384  # address-space limit of each serving process


@dataclass
class _Running:
    lease: TaskLease
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class NodeAgent:
    def __init__(
        self,
        config: NodeConfig,
        wallet: Wallet,
        *,
        transport: httpx.BaseTransport | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.wallet = wallet
        self.client = Client(config.coordinator, wallet, transport=transport)
        self.hardware = detect_hardware()
        self.drain = threading.Event()
        self.abort = threading.Event()
        self._beat_now = threading.Event()
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._emit = on_event or (lambda msg: log.info(msg))
        self._own_workdir = config.workdir is None
        self.workdir = config.workdir or Path(tempfile.mkdtemp(prefix="quackmesh-node-"))
        self.completed = 0
        self.earned = 0
        self._rng = random.Random()
        self._lazy_cache: dict[str, Any] = {}
        # Secure aggregation: every round's keys derive from this and the round's tag, so
        # the agent keeps no per-round state (a restarted node simply drops out of a round).
        self._fl_secret = secrets.token_bytes(32)
        self._fl_unmasked: set[str] = set()  # rounds whose unmask request was answered
        self.serving: ServingPool | None = None
        if config.serve:
            self.serving = ServingPool(
                config.serve,
                coordinator=config.coordinator,
                wallet=wallet,
                transport=transport,
                emit=self._emit,
                workdir=self.workdir / "serving",
                lease_wait_s=config.lease_wait_s,
                memory_mb=config.serve_memory_mb,
                threads=max(1, self.hardware.cpu_cores // len(config.serve)),
            )

    # --- lifecycle -----------------------------------------------------------------------
    def request_drain(self) -> None:
        """Stop leasing (running tasks finish); a second call releases them instead."""
        if self.drain.is_set():
            self.abort.set()
        self.drain.set()
        self._beat_now.set()  # tell the coordinator now: it ends our long-poll early

    def register(self) -> None:
        body = NodeRegister(
            name=self.config.name,
            hardware=self.hardware,
            price_per_unit=self.config.price_per_unit,
            slots=self.config.slots,
            workloads=self._workloads(),
            version=__version__,
            region=self.config.region,
            price_per_hour=self.config.price_per_hour,
            behaviour=self.config.behaviour,
            datasets=[entry.info for entry in self.config.datasets.values()],
            models=self.serving.models if self.serving is not None else [],
        )
        node = self.client.register_node(body)
        self._ensure_stake()
        gpus = ", ".join(g.model for g in self.hardware.gpus) or "no GPU"
        served = ", ".join(f"{m.name} ({m.task})" for m in body.models)
        self._emit(
            f"registered {node.address} as '{node.name}': {self.hardware.cpu_cores} cores, "
            f"{self.hardware.ram_bytes / 2**30:.1f} GiB RAM, {gpus}; "
            f"{self.config.slots} slot(s) at {format_duck(self.config.price_per_unit)}/unit"
            + (f"; serving {served}" if served else "")
        )

    def _workloads(self) -> list[str]:
        """The kinds this node runs: the configured ones, else every built-in kind, less the
        served kinds (``infer.generate``) when no loaded model can answer them."""
        kinds = list(self.config.workloads or [*list_kinds(), *PROTOCOL_KINDS])
        tasks = {m.task for m in self.serving.models} if self.serving is not None else set()
        return [k for k in kinds if k not in SERVED_KINDS or SERVED_KINDS[k] in tasks]

    def _ensure_stake(self) -> None:
        """Top the effective stake up to ``config.stake`` (minting it first with --faucet)."""
        if self.config.stake <= 0:
            return
        info = self.client.stake_info()
        missing = self.config.stake - info.effective
        if missing <= 0:
            return
        if self.config.faucet:
            self.client.faucet(missing)
        info = self.client.stake(missing)
        self._emit(
            f"staked {format_duck(missing)}; effective stake {format_duck(info.effective)}"
            f" (minimum for paid work {format_duck(info.min_stake)})"
        )

    def run(self) -> None:
        """Run until drained; returns when every task has finished or been released.

        Served models load first (the node registers what it loaded) and stop leasing
        inference work when the drain begins.
        """
        beat: threading.Thread | None = None
        try:
            if self.serving is not None:
                self.serving.load(cancel=self.drain)
            self._register_with_retry()
            beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
            beat.start()
            if self.serving is not None:
                self.serving.start()
            self._lease_loop()
            if self.serving is not None:
                self.serving.stop()
            self._finish()
        finally:
            if self.serving is not None:
                self.serving.stop(grace_s=0.0)  # idempotent; kills what an error left running
            self.abort.set()
            self._beat_now.set()
            if beat is not None:
                beat.join(timeout=self.config.heartbeat_s + 5)
            self.client.close()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _register_with_retry(self) -> None:
        delay = 0.5
        while True:
            try:
                self.register()
                return
            except httpx.TransportError as exc:
                if self.drain.is_set():
                    raise
                self._emit(f"coordinator unreachable ({exc}); retrying in {delay:.0f}s")
                self.drain.wait(delay)
                delay = min(delay * 2, 30.0)

    def _free_slots(self) -> int:
        with self._lock:
            return self.config.slots - len(self._running)

    def _lease_loop(self) -> None:
        while not self.drain.is_set():
            free = self._free_slots()
            if free <= 0:
                self.drain.wait(0.05)
                continue
            try:
                leases = self.client.lease(max_tasks=free, wait_s=self.config.lease_wait_s).tasks
            except httpx.TransportError as exc:
                self._emit(f"lease request failed ({exc}); retrying")
                self.drain.wait(2.0)
                continue
            except NodeNotFound:
                self._register_with_retry()
                continue
            # Leases granted to a request made before a drain began are run, not released:
            # the coordinator already counts them as running here, and the drain waits for
            # running tasks anyway (a second Ctrl-C releases them).
            for lease in leases:
                self._start(lease)

    def _finish(self) -> None:
        """Drain: wait for running tasks, then abort and release whatever is left."""
        deadline = time.monotonic() + self.config.drain_timeout_s
        with self._lock:
            count = len(self._running)
        if count:
            self._emit(
                f"draining: waiting for {count} running task(s); press Ctrl-C again to release them"
            )
        while self._free_slots() < self.config.slots:
            if self.abort.is_set() or time.monotonic() > deadline:
                with self._lock:
                    running = list(self._running.values())
                for item in running:
                    item.cancel.set()  # the worker releases the lease
            self.abort.wait(0.05)
        self._emit("drained; stopped")

    # --- tasks -----------------------------------------------------------------------
    def _start(self, lease: TaskLease) -> None:
        item = _Running(lease=lease)
        item.thread = threading.Thread(
            target=self._work, args=(item,), name=lease.task_id, daemon=True
        )
        with self._lock:
            self._running[lease.task_id] = item
        self._emit(f"leased {lease.task_id} ({lease.kind}, job {lease.job_id})")
        item.thread.start()

    def _work(self, item: _Running) -> None:
        lease = item.lease
        taskdir = self.workdir / lease.task_id
        try:
            if self._misbehave(lease):
                return
            if lease.kind in PROTOCOL_KINDS:
                self._protocol_step(lease)
                return
            if lease.kind in SERVED_KINDS:
                outcome = self._generate(lease, taskdir, item.cancel)
            else:
                outcome = self._execute(lease, taskdir, item.cancel)
            if outcome is None:
                return
            if outcome.cancelled:
                self._release(lease)
                return
            self._report(lease, outcome)
        except LeaseLost:
            self._emit(f"{lease.task_id}: lease lost (expired or cancelled); result discarded")
        except (QuackMeshError, httpx.HTTPError) as exc:
            self._emit(f"{lease.task_id}: could not report: {exc}")
        finally:
            shutil.rmtree(taskdir, ignore_errors=True)
            with self._lock:
                self._running.pop(lease.task_id, None)

    def _fetch_inputs(
        self, lease: TaskLease, inputs_dir: Path, params: dict[str, Any], started: float
    ) -> dict[str, Path] | None:
        """Local datasets and downloaded inputs by name (hashes checked); ``None`` after
        reporting an input failure. A local dataset's label goes into ``params``."""
        inputs_dir.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, dataset in lease.local_inputs.items():
            entry = self.config.datasets.get(dataset)
            if entry is None or not entry.path.is_file():
                self._fail_input(lease, name, f"this node holds no dataset {dataset!r}", started)
                return None
            paths[name] = entry.path  # read in place by the sandbox; never uploaded
            params["label"] = entry.info.label
        for ref in lease.inputs:
            try:
                paths[ref.name] = self.client.download(
                    ref.url, inputs_dir / ref.name, sha256=ref.sha256
                )
            except (ValueError, QuackMeshError, httpx.HTTPError) as exc:
                self._fail_input(lease, ref.name, str(exc), started)
                return None
        return paths

    def _execute(
        self, lease: TaskLease, taskdir: Path, cancel: threading.Event
    ) -> SandboxOutcome | None:
        started = time.monotonic()
        params = dict(lease.params)
        params.pop("secagg", None)  # the agent masks the result itself (see _report)
        paths = self._fetch_inputs(lease, taskdir / "inputs", params, started)
        if paths is None:
            return None
        threads = max(1, self.hardware.cpu_cores // self.config.slots)
        return run_task(
            kind=lease.kind,
            params=params,
            inputs=paths,
            workdir=taskdir / "work",
            limits=lease.limits,
            threads=threads,
            cancel=cancel,
            isolate_network=self.config.isolate_network,
        )

    def _generate(
        self, lease: TaskLease, taskdir: Path, cancel: threading.Event
    ) -> SandboxOutcome | None:
        """A served kind (``infer.generate``): every prompt through this node's serving
        process for ``params.model``, greedy; the result written as the sandbox would."""
        started = time.monotonic()
        params = dict(lease.params)
        paths = self._fetch_inputs(lease, taskdir / "inputs", params, started)
        if paths is None:
            return None
        workload = get_workload(lease.kind)
        deadline = started + lease.limits.wall_s

        def fail(reason: FailureReason, detail: str) -> SandboxOutcome:
            elapsed = time.monotonic() - started
            return SandboxOutcome(False, None, reason, detail[:2000], elapsed, 0.0)

        def progress(done: int, total: int) -> None:
            if done == total or done % 10 == 0:
                self._emit(f"{lease.task_id}: generated {done}/{total}")

        serving = self.serving
        if not isinstance(workload, InferGenerate):
            return fail("crash", f"{lease.kind} is not a served kind this node knows")
        try:
            spec = workload.parse_spec(params)
            workload.check_inputs(spec, paths)
            if serving is None:
                return fail("crash", "this node serves no models (start it with --serve)")
            counter = iter(range(1_000_000))

            def complete(op: str, data: dict[str, Any]) -> Completion:
                return serving.complete(
                    spec.model,
                    op,
                    data,
                    request_id=f"{lease.task_id}-{next(counter)}",
                    deadline_s=deadline - time.monotonic(),
                    cancel=cancel,
                )

            result = workload.generate(spec, paths, complete, progress=progress)
        except ValidationFailed as exc:
            return fail("input_error", exc.detail)
        except Interrupted as exc:
            if cancel.is_set():
                return SandboxOutcome(False, None, None, "", time.monotonic() - started, 0.0, True)
            return fail("crash", exc.detail)
        except BackendError as exc:
            timed_out = "deadline" in exc.detail or time.monotonic() >= deadline
            return fail("timeout" if timed_out else "crash", exc.detail)
        out = taskdir / "work" / "result.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(canonical_json(result))
        return SandboxOutcome(True, out, None, "", time.monotonic() - started, 0.0)

    def _fail_input(self, lease: TaskLease, name: str, detail: str, started: float) -> None:
        report = TaskReport(
            lease_id=lease.lease_id,
            outcome="failed",
            failure_reason="input_error",
            detail=f"input {name}: {detail}",
            elapsed_s=time.monotonic() - started,
        )
        self.client.report(lease.task_id, report)
        self._emit(f"{lease.task_id}: input {name} failed: {detail}")

    def _protocol_step(self, lease: TaskLease) -> None:
        """A secure-aggregation step: small crypto on this node's own secrets, in-process."""
        from quackmesh.node.fl_client import secagg_step

        started = time.monotonic()
        try:
            output = secagg_step(lease.params, secret=self._fl_secret, answered=self._fl_unmasked)
        except (ValueError, KeyError, TypeError) as exc:  # a malformed request from the wire
            report = TaskReport(
                lease_id=lease.lease_id,
                outcome="failed",
                failure_reason="input_error",
                detail=f"secure aggregation step refused: {exc!r}"[:2000],
                elapsed_s=time.monotonic() - started,
            )
            self.client.report(lease.task_id, report)
            self._emit(f"{lease.task_id}: secure aggregation step refused: {exc}")
            return
        data = canonical_json(output)
        report = TaskReport(
            lease_id=lease.lease_id,
            outcome="succeeded",
            output=output if len(data) <= INLINE_RESULT_MAX else None,
            output_sha256=sha256_hex(data)
            if len(data) <= INLINE_RESULT_MAX
            else self.client.upload(data).sha256,
            elapsed_s=time.monotonic() - started,
        )
        self.client.report(lease.task_id, report)
        self._emit(f"{lease.task_id}: secure aggregation {lease.params.get('phase')} step done")

    def _misbehave(self, lease: TaskLease) -> bool:
        """Test behaviours: ``lazy`` answers from its cache, ``flaky`` fails a third."""
        behaviour = self.config.behaviour
        if behaviour == "lazy" and lease.kind in self._lazy_cache:
            cached = self._lazy_cache[lease.kind]
            self.client.report(
                lease.task_id,
                TaskReport(lease_id=lease.lease_id, outcome="succeeded", output=cached),
            )
            self._emit(f"{lease.task_id}: [lazy] reported a copied result without running it")
            return True
        if behaviour == "flaky" and self._rng.random() < 1 / 3:
            self.client.report(
                lease.task_id,
                TaskReport(
                    lease_id=lease.lease_id,
                    outcome="failed",
                    failure_reason="crash",
                    detail="flaky test node",
                ),
            )
            self._emit(f"{lease.task_id}: [flaky] reported a failure")
            return True
        return False

    def _report(self, lease: TaskLease, outcome: SandboxOutcome) -> None:
        fl_data: bytes | None = None
        if outcome.ok and outcome.output_path is not None and lease.kind == "fl.local_train":
            try:
                fl_data = self._fl_output(lease, outcome.output_path.read_bytes())
            except (ValueError, KeyError, TypeError) as exc:  # e.g. a malformed secagg block
                outcome = dataclasses.replace(
                    outcome,
                    ok=False,
                    output_path=None,
                    reason="output_error",
                    detail=f"could not mask the update: {exc!r}"[:2000],
                )
        if outcome.ok and outcome.output_path is not None:
            data = outcome.output_path.read_bytes()
            if fl_data is not None:
                data = fl_data
            elif self.config.behaviour == "lazy":
                self._lazy_cache.setdefault(lease.kind, json.loads(data))
            elif self.config.behaviour == "wrong":
                data = canonical_json(perturb(json.loads(data), self._rng.uniform(0.2, 0.8)))
                self._emit(f"{lease.task_id}: [wrong] reporting a perturbed result")
            if len(data) <= INLINE_RESULT_MAX:  # small: inline, one request instead of two
                inline, sha = json.loads(data), sha256_hex(data)
            else:
                inline, sha = None, self.client.upload(data).sha256
            report = TaskReport(
                lease_id=lease.lease_id,
                outcome="succeeded",
                output=inline,
                output_sha256=sha,
                elapsed_s=outcome.elapsed_s,
            )
        else:
            report = TaskReport(
                lease_id=lease.lease_id,
                outcome="failed",
                failure_reason=outcome.reason or "crash",
                detail=outcome.detail,
                elapsed_s=outcome.elapsed_s,
            )
        result = self.client.report(lease.task_id, report)
        if report.outcome == "succeeded":
            self.completed += 1
            self.earned += result.paid
            self._emit(
                f"{lease.task_id}: done in {outcome.elapsed_s:.2f}s, paid {format_duck(result.paid)}"
            )
        else:
            self._emit(f"{lease.task_id}: failed ({report.failure_reason}): {report.detail[:200]}")

    def _fl_output(self, lease: TaskLease, data: bytes) -> bytes:
        """A training result as the coordinator gets it: sign-flipped by a ``wrong`` test
        node (a poisoning attacker), masked under secure aggregation."""
        from quackmesh.node.fl_client import flip_update, mask_update

        result = json.loads(data)
        if self.config.behaviour == "wrong":
            result = flip_update(result, lease.params)
            self._emit(f"{lease.task_id}: [wrong] reporting a sign-flipped, amplified update")
        if "secagg" in lease.params:
            result = mask_update(result, lease.params, secret=self._fl_secret)
        return canonical_json(result)

    def _release(self, lease: TaskLease) -> None:
        try:
            self.client.release(lease.task_id, lease.lease_id)
            self._emit(f"{lease.task_id}: released back to the queue")
        except (QuackMeshError, httpx.HTTPError) as exc:
            self._emit(f"{lease.task_id}: release failed ({exc}); its lease will expire")

    # --- heartbeats --------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self.abort.is_set():
            with self._lock:
                running = list(self._running)
            body = HeartbeatCreate(
                running=running,
                free_slots=max(0, self.config.slots - len(running)),
                draining=self.drain.is_set(),
            )
            try:
                reply = self.client.heartbeat(body)
                for task_id in reply.cancel:
                    with self._lock:
                        item = self._running.get(task_id)
                    if item is not None:
                        self._emit(
                            f"{task_id}: coordinator cancelled it (lease lost or job cancelled)"
                        )
                        item.cancel.set()
            except NodeNotFound:
                self._safe_reregister()
            except (QuackMeshError, httpx.HTTPError) as exc:
                log.warning("heartbeat failed: %s", exc)
            self._beat_now.wait(self.config.heartbeat_s)
            self._beat_now.clear()

    def _safe_reregister(self) -> None:
        try:
            self.register()
        except (QuackMeshError, httpx.HTTPError) as exc:
            log.warning("re-register failed: %s", exc)


def perturb(value: Any, factor: float) -> Any:
    """A cheater's result: every number scaled by ``1 + factor`` (shape kept, so it parses)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value * (1 + factor) + factor
    if isinstance(value, list):
        return [perturb(v, factor) for v in value]
    if isinstance(value, dict):
        return {k: perturb(v, factor) for k, v in value.items()}
    return value
