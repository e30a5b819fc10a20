"""Coordinator tables (SQLAlchemy 2 declarative). Ledger tables live in quackmesh.ledger."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Blob",
    "Dispute",
    "Event",
    "FlClient",
    "FlRound",
    "FlRun",
    "Honeypot",
    "Job",
    "Node",
    "NodeTrust",
    "Rental",
    "RentalNode",
    "Slash",
    "Task",
    "Unbonding",
]

NEUTRAL = 0.5  # where every reputation part starts (see verify/reputation.py)


class Base(DeclarativeBase):
    pass


class Node(Base):
    __tablename__ = "nodes"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    hardware: Mapped[dict[str, Any]] = mapped_column(JSON)
    price_per_unit: Mapped[int] = mapped_column(BigInteger)
    slots: Mapped[int] = mapped_column(Integer)
    workloads: Mapped[list[str]] = mapped_column(JSON)
    version: Mapped[str] = mapped_column(String(32), default="")
    registered_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float, index=True)
    tasks_completed: Mapped[int] = mapped_column(Integer, default=0)
    tasks_failed: Mapped[int] = mapped_column(Integer, default=0)
    # --- market and trust (issue 3) ---
    region: Mapped[str] = mapped_column(String(32), default="", server_default="")
    price_per_hour: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0"
    )  # micro-DUCK per hour of rental; 0 = not for rent
    verifier: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0"
    )  # marked by the operator: runs `reference` re-checks
    behaviour: Mapped[str] = mapped_column(
        String(16), default="honest", server_default="honest"
    )  # development-mode test nodes only; never used by any decision
    rep_validity: Mapped[float] = mapped_column(Float, default=NEUTRAL, server_default="0.5")
    rep_timeliness: Mapped[float] = mapped_column(Float, default=NEUTRAL, server_default="0.5")
    rep_uptime: Mapped[float] = mapped_column(Float, default=NEUTRAL, server_default="0.5")
    results_valid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    results_invalid: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # --- federated learning (issue 4): what each node-local dataset looks like, never rows
    datasets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")


class Blob(Base):
    """One row per (content, uploader): every uploader of the same bytes may read them."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    inputs: Mapped[dict[str, str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    units: Mapped[int] = mapped_column(BigInteger)
    max_price: Mapped[int] = mapped_column(BigInteger)
    escrowed: Mapped[int] = mapped_column(BigInteger)
    paid: Mapped[int] = mapped_column(BigInteger, default=0)
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # --- verification, priority, rentals (issue 3) ---
    policy: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    replicas: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    quorum: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    max_replicas: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rental_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Honeypots: coordinator-owned known-answer jobs. Hidden from nodes (never in a lease).
    honeypot: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    expected_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state_queued_at", "state", "queued_at"),
        Index("ix_tasks_state_priority_queued_at", "state", "priority", "queued_at"),
        Index("ix_tasks_state_lease_expires_at", "state", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    node: Mapped[str | None] = mapped_column(String(42), nullable=True, index=True)
    lease_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    price_per_unit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_price: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    excluded_nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    queued_at: Mapped[float] = mapped_column(Float)
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    output_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    paid: Mapped[int] = mapped_column(BigInteger, default=0)
    # --- verification and payment visibility (issue 3) ---
    role: Mapped[str] = mapped_column(
        String(16), default="primary", server_default="primary"
    )  # primary | replica | check | reference | dispute | honeypot
    verdict: Mapped[str] = mapped_column(
        String(16), default="pending", server_default="pending"
    )  # pending | valid | invalid | unchecked (accepted without a check) | unverified
    payment_state: Mapped[str] = mapped_column(
        String(16), default="escrowed", server_default="escrowed"
    )  # escrowed | paid | refunded | slashed | unpaid | rental
    payment_tx: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pinned_node: Mapped[str | None] = mapped_column(String(42), nullable=True)
    verifier_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    min_reputation: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    dispute_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rental_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # --- per-task work (issue 4): federated rounds send each node its own params/inputs ---
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # else the job's
    inputs: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)  # else the job's
    local_inputs: Mapped[dict[str, str] | None] = mapped_column(
        JSON, nullable=True
    )  # input name -> the node's own dataset name (never uploaded)
    units: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # else the job's


class Event(Base):
    """Append-only record of every state change; ids only grow (the stream's cursor)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(48), index=True)
    at: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    node: Mapped[str | None] = mapped_column(String(42), nullable=True, index=True)
    address: Mapped[str | None] = mapped_column(String(42), nullable=True, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class NodeTrust(Base):
    """Adaptive replication state per (node, workload): BOINC's consecutive valid count."""

    __tablename__ = "node_trust"

    node: Mapped[str] = mapped_column(String(42), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    consecutive_valid: Mapped[int] = mapped_column(Integer, default=0)
    valid: Mapped[int] = mapped_column(Integer, default=0)
    invalid: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


class Unbonding(Base):
    """Stake on its way out: still in ``stake:<addr>`` (slashable) until ``release_at``."""

    __tablename__ = "unbondings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    requested_at: Mapped[float] = mapped_column(Float)
    release_at: Mapped[float] = mapped_column(Float, index=True)
    state: Mapped[str] = mapped_column(String(16))  # unbonding | released
    released: Mapped[int] = mapped_column(BigInteger, default=0)  # less if slashed meanwhile
    tx_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Slash(Base):
    """A stake penalty with the evidence that justified it."""

    __tablename__ = "slashes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    node: Mapped[str] = mapped_column(String(42), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    task_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))  # lost_vote | honeypot | reference | dispute
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    tx_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[float] = mapped_column(Float)


class Dispute(Base):
    __tablename__ = "disputes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    client: Mapped[str] = mapped_column(String(42), index=True)
    state: Mapped[str] = mapped_column(String(16))  # open | upheld | overturned | inconclusive
    fee: Mapped[int] = mapped_column(BigInteger)
    escrowed: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    opened_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Rental(Base):
    """Nodes reserved for one client; escrow paid out per minute of online time."""

    __tablename__ = "rentals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client: Mapped[str] = mapped_column(String(42), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # active | ended | cancelled
    hours: Mapped[float] = mapped_column(Float)
    price_per_hour: Mapped[int] = mapped_column(BigInteger)  # sum over the rented nodes
    escrowed: Mapped[int] = mapped_column(BigInteger)
    paid: Mapped[int] = mapped_column(BigInteger, default=0)  # to providers + fee
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float, index=True)
    settled_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RentalNode(Base):
    __tablename__ = "rental_nodes"

    rental_id: Mapped[str] = mapped_column(ForeignKey("rentals.id"), primary_key=True)
    node: Mapped[str] = mapped_column(String(42), primary_key=True, index=True)
    price_per_hour: Mapped[int] = mapped_column(BigInteger)
    online_s: Mapped[float] = mapped_column(Float, default=0.0)  # accrued billable time
    paid: Mapped[int] = mapped_column(BigInteger, default=0)  # gross, fee included


class Honeypot(Base):
    """A known answer: a task whose correct output was established by agreeing replicas."""

    __tablename__ = "honeypots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    inputs: Mapped[dict[str, str]] = mapped_column(JSON)
    units: Mapped[int] = mapped_column(BigInteger)
    output_sha256: Mapped[str] = mapped_column(String(64))
    source_job: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    uses: Mapped[int] = mapped_column(Integer, default=0)


class FlRun(Base):
    """A federated training job's round state: a restarted coordinator resumes from here."""

    __tablename__ = "fl_runs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    round: Mapped[int] = mapped_column(Integer)  # the current round, 1-based
    phase: Mapped[str] = mapped_column(
        String(16), index=True
    )  # select | advertise | shares | train | unmask | done | failed
    model_sha: Mapped[str] = mapped_column(String(64))  # current global weights (safetensors)
    opt_state_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    eps_spent: Mapped[float] = mapped_column(Float, default=0.0)
    reward_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    compute_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    units_cap: Mapped[int] = mapped_column(BigInteger)  # compute units escrowed per train task
    shards: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # node -> shard sha256
    round_started_at: Mapped[float] = mapped_column(Float)
    deadline: Mapped[float] = mapped_column(Float, index=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)  # of the current round
    eligible: Mapped[int] = mapped_column(Integer, default=0)  # nodes it could pick from
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


class FlClient(Base):
    """One node's part in one round (its protocol messages, update, score and pay)."""

    __tablename__ = "fl_clients"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)  # the round's retry
    node: Mapped[str] = mapped_column(String(42), primary_key=True)
    client_id: Mapped[int] = mapped_column(Integer)  # 1..n: the Shamir x-coordinate
    state: Mapped[str] = mapped_column(
        String(16)
    )  # selected | advertised | shared | trained | revealed | dropped
    task_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    units: Mapped[int] = mapped_column(BigInteger, default=0)
    keys: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shares: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # recipient id -> ct
    reveal: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    update_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n_examples: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # local, after training
    fed_loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # global model, local data
    fed_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    score: Mapped[float] = mapped_column(Float, default=0.0)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    reward: Mapped[int] = mapped_column(BigInteger, default=0)
    compute_paid: Mapped[int] = mapped_column(BigInteger, default=0)


class FlRound(Base):
    """A finished (or abandoned) round: metrics, privacy spent, the contribution split."""

    __tablename__ = "fl_rounds"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # done | failed
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float)
    participants: Mapped[int] = mapped_column(Integer)
    dropped: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # central, holdout
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    fed_loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # federated evaluation
    fed_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    reward: Mapped[int] = mapped_column(BigInteger, default=0)
    compute: Mapped[int] = mapped_column(BigInteger, default=0)
    model_sha: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
