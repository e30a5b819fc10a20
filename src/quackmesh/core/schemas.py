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
    "MODEL_NAME_PATTERN",
    "Address",
    "BalancePublic",
    "Behaviour",
    "BlobPublic",
    "DatasetInfo",
    "DisputeCreate",
    "DisputePublic",
    "ExplainEntry",
    "ExplainPublic",
    "ExplainTask",
    "FailureReason",
    "FaucetCreate",
    "FlClientPublic",
    "FlRoundPublic",
    "FlRunPublic",
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
    "Kind",
    "LeaseCreate",
    "LeasePublic",
    "LedgerCheckPublic",
    "MarketExclusion",
    "MarketNodesPublic",
    "ModelName",
    "ModelTask",
    "NodePublic",
    "NodeRegister",
    "NodeStatus",
    "PaymentState",
    "PolicyName",
    "ReleaseCreate",
    "RentalCreate",
    "RentalListPublic",
    "RentalNodePublic",
    "RentalPublic",
    "RentalQuotePublic",
    "ReputationPublic",
    "ServedModel",
    "Sha256",
    "SlashListPublic",
    "SlashPublic",
    "StakeCreate",
    "StakePublic",
    "TaskFailure",
    "TaskLease",
    "TaskLimits",
    "TaskPublic",
    "TaskReport",
    "TaskReportPublic",
    "TaskState",
    "UnbondingPublic",
    "Verification",
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


Behaviour = Literal[
    "honest",  # runs the workload and reports its result
    "wrong",  # reports a perturbed result (a cheater)
    "lazy",  # skips the work and reports a copied, plausible result
    "flaky",  # fails about a third of its tasks
]

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


DatasetName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class DatasetInfo(_Wire):
    """What a node tells the network about one of its datasets: the shape, never the rows."""

    name: DatasetName
    format: Literal["csv", "npz", "parquet"]
    rows: int = Field(ge=0)
    features: int = Field(ge=0, description="feature columns (the label excluded)")
    feature_names: list[str] = Field(default_factory=list, max_length=20)
    label: str = Field(max_length=64)
    label_histogram: dict[str, int] = Field(
        default_factory=dict, description="label -> rows (coarsened when `coarsen` is set)"
    )
    coarsen: int | None = Field(default=None, ge=1, description="counts rounded to this step")


# --- inference (issue 6; the rest is in quackmesh.core.inference_schemas) ------------------

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN)]
ModelTask = Literal["embed", "generate"]


class ServedModel(_Wire):
    """One model a node serves, as it advertises it."""

    name: ModelName
    task: ModelTask
    price: int = Field(
        ge=0, description="micro-DUCK per 1,000 tokens (generate) or per input text (embed)"
    )
    context_len: int = Field(default=2048, ge=1, le=1_048_576, description="tokens in + out")
    dims: int | None = Field(default=None, ge=1, description="embedding size (embed models)")


class NodeRegister(_Wire):
    name: str = Field(min_length=1, max_length=64)
    hardware: Hardware
    price_per_unit: int = Field(ge=0, description="micro-DUCK per compute unit")
    slots: int = Field(ge=1, le=256)
    workloads: list[Kind] = Field(min_length=1, max_length=256)
    version: str = Field(default="", max_length=32)
    region: str = Field(default="", max_length=32, pattern=r"^[a-z0-9-]*$")
    price_per_hour: int = Field(
        default=0, ge=0, description="micro-DUCK per hour of rental; 0 = not for rent"
    )
    behaviour: Behaviour = Field(
        default="honest", description="test nodes only; refused outside development mode"
    )
    datasets: list[DatasetInfo] = Field(default_factory=list, max_length=64)
    models: list[ServedModel] = Field(
        default_factory=list, max_length=64, description="models served for inference"
    )


class ReputationPublic(_Wire):
    score: float = Field(description="0.5·validity + 0.3·timeliness + 0.2·uptime")
    validity: float
    timeliness: float
    uptime: float
    results_valid: int
    results_invalid: int


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
    region: str = ""
    price_per_hour: int = 0
    verifier: bool = False
    stake: int = Field(default=0, description="effective stake (staked − unbonding)")
    reputation: ReputationPublic | None = None
    rental_id: str | None = Field(default=None, description="active rental holding it")
    datasets: list[DatasetInfo] = Field(default_factory=list)
    models: list[ServedModel] = Field(default_factory=list)


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
    local_inputs: dict[str, str] = Field(
        default_factory=dict,
        description="input name -> the node's own dataset name (federated training)",
    )


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


PolicyName = Literal["none", "redundant", "adaptive", "honeypot", "reference"]


class Verification(_Wire):
    """How a job's result is checked (see README "Verification")."""

    policy: PolicyName = "none"
    replicas: int | None = Field(default=None, ge=1, le=10, description="redundant: k")
    quorum: int | None = Field(default=None, ge=1, le=10, description="redundant: q")
    max_replicas: int | None = Field(
        default=None, ge=1, le=10, description="cap on replicas when no quorum is reached"
    )


class JobCreate(_Wire):
    kind: Kind
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Sha256] = Field(description="input name -> uploaded blob sha256")
    max_price: int = Field(gt=0, description="max micro-DUCK per compute unit")
    max_attempts: int = Field(default=3, ge=1, le=10)
    verification: Verification = Field(default_factory=lambda: Verification())
    rental_id: str | None = Field(
        default=None,
        max_length=32,
        description="run only on this rental's nodes; paid by the rental, not per task",
    )
    timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    # The sandboxed child imports numpy/scikit-learn/pandas: ~520 MiB of address space
    # before any work, so less than 1 GiB cannot run a classic ML task reliably.
    memory_mb: int = Field(default=2048, ge=1024, le=1_048_576)


class TaskFailure(_Wire):
    node: str
    reason: str
    detail: str
    at: float


PaymentState = Literal[
    "escrowed",  # the job's escrow covers it; nothing paid yet
    "paid",  # provider paid (payment_tx is the ledger transaction)
    "refunded",  # not run or cancelled; its share went back to the client
    "slashed",  # lost a vote: unpaid, and the node's stake was slashed
    "unpaid",  # ran but was not needed or failed; no payment
    "rental",  # covered by the rental's hourly payments
]


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
    role: str = "primary"
    verdict: str = "pending"
    payment_state: PaymentState = "escrowed"
    payment_tx: str | None = None


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
    verification: Verification = Field(default_factory=lambda: Verification())
    priority: int = 0
    rental_id: str | None = None
    completed_at: float | None = None
    escrow_tx: str | None = None


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
    staked: int = 0


class LedgerCheckPublic(_Wire):
    ok: bool
    transactions: int
    head: str
    total: int = Field(description="sum of all balances; 0 when conserved")
    problems: list[str]


# --- staking, slashing, disputes (issue 3) ---------------------------------------------


class StakeCreate(_Wire):
    amount: int = Field(gt=0, description="micro-DUCK to move from the wallet into stake")


class UnbondingPublic(_Wire):
    id: str
    amount: int
    requested_at: float
    release_at: float
    state: Literal["unbonding", "released"]
    released: int


class StakePublic(_Wire):
    address: str
    staked: int = Field(description="balance of stake:<address>, unbonding included")
    unbonding: int = Field(description="requested out, still slashable until released")
    effective: int = Field(description="staked − unbonding: what counts for matching")
    min_stake: int
    eligible: bool = Field(description="effective ≥ min_stake: may receive paid work")
    priority: int = Field(description="queue priority this stake gives the address's jobs")
    unbondings: list[UnbondingPublic]


class SlashPublic(_Wire):
    id: str
    node: str
    job_id: str | None
    task_id: str | None
    amount: int
    reason: str
    evidence: dict[str, Any]
    tx_id: str | None
    at: float


class SlashListPublic(_Wire):
    slashes: list[SlashPublic]


class DisputeCreate(_Wire):
    reason: str = Field(default="", max_length=2000)


class DisputePublic(_Wire):
    id: str
    job_id: str
    client: str
    state: Literal["open", "upheld", "overturned", "inconclusive"]
    fee: int
    escrowed: int
    reason: str
    outcome: dict[str, Any]
    opened_at: float
    resolved_at: float | None


# --- market, explain, rentals (issue 3) ------------------------------------------------


class MarketExclusion(_Wire):
    address: str
    name: str
    reason: str = Field(description="the first filter the node fails (its query parameter)")
    detail: str


class MarketNodesPublic(_Wire):
    nodes: list[NodePublic]
    total: int = Field(description="matches before the limit")
    excluded: list[MarketExclusion] | None = Field(
        default=None, description="with explain=true: every other node and why"
    )
    summary: str | None = Field(default=None, description="with explain=true")


class ExplainEntry(_Wire):
    node: str
    name: str
    eligible: bool
    reason: str | None = Field(description="the first rule that excludes it (None: eligible)")
    detail: str


class ExplainTask(_Wire):
    task_id: str
    role: str
    state: TaskState
    candidates: list[ExplainEntry]


class ExplainPublic(_Wire):
    job_id: str
    state: JobState
    summary: str
    tasks: list[ExplainTask]


class RentalCreate(_Wire):
    nodes: list[Address] = Field(default_factory=list, max_length=64)
    gpus: int | None = Field(default=None, ge=1, le=512, description="pick nodes with this many")
    hours: float = Field(gt=0, le=24 * 365)
    budget: int = Field(gt=0, description="most micro-DUCK the rental may escrow")


class RentalNodePublic(_Wire):
    node: str
    price_per_hour: int
    online_s: float
    paid: int


class RentalPublic(_Wire):
    id: str
    client: str
    state: Literal["active", "ended", "cancelled"]
    hours: float
    price_per_hour: int
    escrowed: int
    paid: int
    fee: int
    refunded: int
    started_at: float
    ends_at: float
    ended_at: float | None
    nodes: list[RentalNodePublic]


class RentalListPublic(_Wire):
    rentals: list[RentalPublic]


class RentalQuotePublic(_Wire):
    """What a rental would cost, before anything is escrowed."""

    nodes: list[RentalNodePublic]
    hours: float
    price_per_hour: int
    cost: int
    budget: int
    within_budget: bool


# --- federated learning ----------------------------------------------------------------


class FlClientPublic(_Wire):
    node: str
    state: str = Field(description="selected | advertised | shared | trained | revealed | dropped")
    n_examples: int
    loss: float | None = Field(description="local training loss")
    fed_loss: float | None = Field(description="the round's global model on the node's data")
    fed_accuracy: float | None
    score: float = Field(description="contribution score (README: Contribution)")
    accepted: bool = Field(description="False when the strategy rejected the update")
    reward: int
    compute_paid: int


class FlRoundPublic(_Wire):
    round: int
    state: Literal["done", "failed"]
    started_at: float
    finished_at: float
    participants: int
    dropped: int
    loss: float | None = Field(description="central evaluation on the client's holdout data")
    accuracy: float | None
    fed_loss: float | None = Field(description="federated evaluation (example-weighted)")
    fed_accuracy: float | None
    epsilon: float | None = Field(description="ε spent so far at the job's δ (DP jobs)")
    reward: int
    compute: int
    model_sha256: str
    clients: list[FlClientPublic]
    detail: dict[str, Any] = Field(default_factory=dict)


class FlRunPublic(_Wire):
    job_id: str
    state: JobState
    round: int = Field(description="the current round (rounds done + 1 while running)")
    rounds: int
    phase: str
    epsilon: float | None
    reward_paid: int
    compute_paid: int
    spent: int = Field(description="reward + compute paid so far (fees included)")
    model_sha256: str
    stop_reason: str | None
    history: list[FlRoundPublic]
