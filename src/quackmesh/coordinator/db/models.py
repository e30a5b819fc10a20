"""Coordinator tables (SQLAlchemy 2 declarative). Ledger tables live in quackmesh.ledger."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Blob", "Event", "Job", "Node", "Task"]


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


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_state_queued_at", "state", "queued_at"),
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
