"""Wire schemas shared by the coordinator, the SDK and the provider node.

Models are split by direction as in the FastAPI template: ``…Create`` is what a caller
sends, ``…Public`` what the coordinator returns, so internal columns never leak. All
amounts are ``int`` micro-DUCK; all times are unix seconds (float).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "INLINE_RESULT_MAX",
    "Address",
    "BalancePublic",
    "BlobPublic",
    "FailureReason",
    "FaucetCreate",
    "GpuInfo",
    "Hardware",
    "HeartbeatCreate",
    "HeartbeatPublic",
    "InputRef",
    "JobCreate",
    "JobListPublic",
    "JobPublic",
    "JobResultPublic",
    "JobState",
    "LeaseCreate",
    "LeasePublic",
    "LedgerCheckPublic",
    "NodePublic",
    "NodeRegister",
    "NodeStatus",
    "ReleaseCreate",
    "Sha256",
    "TaskFailure",
    "TaskLease",
    "TaskLimits",
    "TaskPublic",
    "TaskReport",
    "TaskReportPublic",
    "TaskState",
]

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
Kind = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeStatus(StrEnum):
    ONLINE = "online"  # heartbeating within the offline window; can lease tasks
    DRAINING = "draining"  # finishing or releasing its tasks; takes no new leases
    OFFLINE = "offline"  # silent past the offline window (or stopped); leases re-queued


class JobState(StrEnum):
    QUEUED = "queued"  # escrowed, waiting for a node
    RUNNING = "running"  # at least one task leased
    SUCCEEDED = "succeeded"  # result accepted, provider paid, rest refunded
    FAILED = "failed"  # attempts exhausted; escrow refunded
    CANCELLED = "cancelled"  # cancelled by the owner; escrow refunded


class TaskState(StrEnum):
    QUEUED = "queued"  # waiting for a lease
    LEASED = "leased"  # held by a node until lease_expires_at
    SUCCEEDED = "succeeded"  # output accepted
    FAILED = "failed"  # gave up after max_attempts
    CANCELLED = "cancelled"  # its job was cancelled


FailureReason = Literal[
    "timeout",  # wall-clock limit hit
    "cpu_limit",  # CPU-seconds limit hit
    "memory_limit",  # address-space limit hit
    "crash",  # the workload process exited abnormally
    "input_error",  # an input could not be fetched or its sha256 did not match
    "output_error",  # the output could not be produced or uploaded
    "lease_expired",  # recorded by the coordinator: the node went silent
]


# --- nodes -----------------------------------------------------------------------------


class GpuInfo(_Wire):
    model: str = Field(max_length=128)
    memory_bytes: int = Field(ge=0)


class Hardware(_Wire):
    cpu_cores: int = Field(ge=1, le=4096)
    ram_bytes: int = Field(ge=0)
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)
    platform: str = Field(default="", max_length=128)


class NodeRegister(_Wire):
    name: str = Field(min_length=1, max_length=64)
    hardware: Hardware
    price_per_unit: int = Field(ge=0, description="micro-DUCK per compute unit")
    slots: int = Field(ge=1, le=256)
    workloads: list[Kind] = Field(min_length=1, max_length=256)
    version: str = Field(default="", max_length=32)


class NodePublic(_Wire):
    address: str
    name: str
    status: NodeStatus
    hardware: Hardware
    price_per_unit: int
    slots: int
    workloads: list[str]
    registered_at: float
    last_seen_at: float
    tasks_completed: int
    tasks_failed: int


class HeartbeatCreate(_Wire):
    running: list[str] = Field(default_factory=list, max_length=256)
    free_slots: int = Field(ge=0, le=256)
    draining: bool = False


class HeartbeatPublic(_Wire):
    server_time: float
    status: NodeStatus
    cancel: list[str] = Field(description="task ids the node must stop: lease lost or cancelled")


# --- leases and reports ----------------------------------------------------------------


class LeaseCreate(_Wire):
    max_tasks: int = Field(default=1, ge=1, le=64)
    wait_s: float = Field(default=20.0, ge=0.0, le=30.0, description="long-poll time")


class InputRef(_Wire):
    name: str
    sha256: Sha256
    size: int
    url: str = Field(description="expiring capability URL, readable only by the lessee")


class TaskLimits(_Wire):
    wall_s: float = Field(gt=0)
    cpu_s: float = Field(gt=0)
    memory_mb: int = Field(gt=0)


class TaskLease(_Wire):
    task_id: str
    job_id: str
    lease_id: str
    kind: str
    params: dict[str, Any]
    inputs: list[InputRef]
    lease_expires_at: float
    limits: TaskLimits


class LeasePublic(_Wire):
    tasks: list[TaskLease]


INLINE_RESULT_MAX = 256 * 1024  # bytes of canonical JSON a report may carry inline


class TaskReport(_Wire):
    lease_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["succeeded", "failed"]
    output: dict[str, Any] | None = Field(
        default=None,
        description="a small result inline (at most INLINE_RESULT_MAX bytes as canonical "
        "JSON), saving a separate upload; larger results are uploaded as blobs",
    )
    output_sha256: Sha256 | None = None
    failure_reason: FailureReason | None = None
    detail: str = Field(default="", max_length=4000)
    elapsed_s: float = Field(default=0.0, ge=0)


class TaskReportPublic(_Wire):
    task_id: str
    state: TaskState
    paid: int = Field(description="micro-DUCK paid to the provider for this task")


class ReleaseCreate(_Wire):
    lease_id: str = Field(min_length=1, max_length=64)


# --- jobs ------------------------------------------------------------------------------


class JobCreate(_Wire):
    kind: Kind
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Sha256] = Field(description="input name -> uploaded blob sha256")
    max_price: int = Field(gt=0, description="max micro-DUCK per compute unit")
    max_attempts: int = Field(default=3, ge=1, le=10)
    timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    # The sandboxed child imports numpy/scikit-learn/pandas: ~520 MiB of address space
    # before any work, so less than 1 GiB cannot run a classic ML task reliably.
    memory_mb: int = Field(default=2048, ge=1024, le=1_048_576)


class TaskFailure(_Wire):
    node: str
    reason: str
    detail: str
    at: float


class TaskPublic(_Wire):
    id: str
    state: TaskState
    node: str | None
    attempts: int
    failures: list[TaskFailure]
    leased_at: float | None
    finished_at: float | None
    output_sha256: str | None
    paid: int


class JobPublic(_Wire):
    id: str
    owner: str
    kind: str
    params: dict[str, Any]
    inputs: dict[str, str]
    state: JobState
    units: int = Field(description="compute units the workload costs")
    max_price: int
    escrowed: int = Field(description="micro-DUCK locked at submission")
    paid: int = Field(description="micro-DUCK paid out (provider + protocol fee)")
    fee: int = Field(description="protocol fee part of `paid`")
    refunded: int
    error: str | None
    created_at: float
    updated_at: float
    tasks: list[TaskPublic]


class JobListPublic(_Wire):
    jobs: list[JobPublic]


class JobResultPublic(_Wire):
    job_id: str
    kind: str
    output_sha256: str
    result: dict[str, Any]


# --- blobs, money ----------------------------------------------------------------------


class BlobPublic(_Wire):
    sha256: str
    size: int


class FaucetCreate(_Wire):
    amount: int = Field(gt=0, description="micro-DUCK to mint (development mode only)")


class BalancePublic(_Wire):
    address: str
    available: int
    in_escrow: int


class LedgerCheckPublic(_Wire):
    ok: bool
    transactions: int
    head: str
    total: int = Field(description="sum of all balances; 0 when conserved")
    problems: list[str]
