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
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "AuthNonce",
    "BalanceEpoch",
    "Base",
    "Blob",
    "ChainDeposit",
    "ChainState",
    "Cursor",
    "Dispute",
    "Event",
    "FlClient",
    "FlRound",
    "FlRun",
    "Honeypot",
    "InferenceRequest",
    "Job",
    "Node",
    "NodeTrust",
    "Rental",
    "RentalNode",
    "Slash",
    "Task",
    "Unbonding",
    "WebSession",
    "Webhook",
    "WebhookDelivery",
    "WithdrawalVoucher",
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
    # --- inference (issue 6): the models it serves (ServedModel dicts: name, task, price …)
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")


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


class AuthNonce(Base):
    """A Sign-In with Ethereum nonce (EIP-4361): issued once, accepted once, then spent."""

    __tablename__ = "auth_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class WebSession(Base):
    """A browser session: only the token's sha256 is stored; the cookie holds the token."""

    __tablename__ = "web_sessions"

    token_sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    method: Mapped[str] = mapped_column(String(16))  # siwe | dev


class Webhook(Base):
    """A client's URL that receives the events it subscribed to, HMAC-signed."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    url: Mapped[str] = mapped_column(Text)
    types: Mapped[list[str]] = mapped_column(JSON, default=list)  # event types or "job.*"
    secret: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(String(200), default="")
    # The event log's head when it was registered: only later events are delivered.
    after_event: Mapped[int] = mapped_column(Integer, default=0)


class WebhookDelivery(Base):
    """One event to one webhook: pending → delivered, or retried with backoff → failed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event_id: Mapped[int] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(48))
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)


class Cursor(Base):
    """A named position in the event log (the webhook dispatcher's), kept across restarts."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(48), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


# --- on-chain settlement (issue 7) ------------------------------------------------------


class ChainState(Base):
    """The Vault this database settles against, and how far its events have been applied.

    One row per Vault; the coordinator refuses to start against a different chain or Vault
    than the database already settled with (its balances would be backed by nothing).
    """

    __tablename__ = "chain_state"

    vault: Mapped[str] = mapped_column(String(42), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    token: Mapped[str] = mapped_column(String(42))
    deployed_block: Mapped[int] = mapped_column(BigInteger)
    scanned_block: Mapped[int] = mapped_column(BigInteger)  # Vault events applied up to here
    created_at: Mapped[float] = mapped_column(Float)


class ChainDeposit(Base):
    """A confirmed ``Deposit`` event, credited exactly once (the key is the Vault's id)."""

    __tablename__ = "chain_deposits"

    vault: Mapped[str] = mapped_column(String(42), primary_key=True)
    deposit_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    block: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    credited_at: Mapped[float] = mapped_column(Float)


class WithdrawalVoucher(Base):
    """A signed promise the Vault pays: ``pending`` until the chain shows it ``paid``, or
    ``expired`` (its DUCK back in the wallet) once its expiry has passed on chain."""

    __tablename__ = "withdrawal_vouchers"
    __table_args__ = (Index("ix_withdrawal_vouchers_state_expiry", "state", "expiry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # = nonce
    vault: Mapped[str] = mapped_column(String(42))
    account: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    expiry: Mapped[int] = mapped_column(BigInteger)  # unix seconds, the Vault's clock
    signature: Mapped[str] = mapped_column(String(132))  # 0x r ‖ s ‖ v
    state: Mapped[str] = mapped_column(String(16))  # pending | paid | expired
    created_at: Mapped[float] = mapped_column(Float)
    settled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)


class BalanceEpoch(Base):
    """One epoch's snapshot of every wallet balance, its Merkle root and where it stands on
    chain (``pending`` until the ``post_root`` transaction is mined, then ``posted``)."""

    __tablename__ = "balance_epochs"

    vault: Mapped[str] = mapped_column(String(42), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    root: Mapped[str] = mapped_column(String(66))
    journal_seq: Mapped[int] = mapped_column(Integer)
    journal_head: Mapped[str] = mapped_column(String(66))
    total: Mapped[int] = mapped_column(BigInteger)
    balances: Mapped[dict[str, int]] = mapped_column(JSON)  # checksummed address -> balance
    first_event: Mapped[int] = mapped_column(Integer)  # job events mirrored: (first, last]
    last_event: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # pending | posted
    created_at: Mapped[float] = mapped_column(Float)
    posted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


# --- inference gateway (issue 6) --------------------------------------------------------


class ApiKey(Base):
    """A gateway API key bound to a wallet: only the key's sha256 is stored (shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    prefix: Mapped[str] = mapped_column(String(16))  # the key's first characters
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class InferenceRequest(Base):
    """One gateway request: its reservation, who served it, what it cost, how it was checked.

    ``reserved`` while it runs (the maximum cost sits in ``escrow:infer:<id>``), then
    ``completed`` (paid out, the rest refunded) or ``failed`` (refunded whole).
    """

    __tablename__ = "inference_requests"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)  # the paying wallet
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str] = mapped_column(String(128))
    op: Mapped[str] = mapped_column(String(16))  # embed | chat | complete
    state: Mapped[str] = mapped_column(String(16), index=True)  # reserved | completed | failed
    node: Mapped[str | None] = mapped_column(String(42), nullable=True, index=True)
    price: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the node's price
    reserved: Mapped[int] = mapped_column(BigInteger)
    charged: Mapped[int] = mapped_column(BigInteger, default=0)  # to the node + fee
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    failed_nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    verdict: Mapped[str] = mapped_column(
        String(16), default="unchecked"
    )  # unchecked | valid | invalid | inconclusive (after a re-run on other nodes)
    checked_by: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_chunk_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
