"""Money endpoints: faucet (development only), balance, ledger check and journal."""

from __future__ import annotations

import io
import time

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from quackmesh.coordinator.accounts.staking import (
    add_stake,
    release_matured,
    request_unstake,
    slash_public,
    stake_public,
)
from quackmesh.coordinator.chain import service as chain_service
from quackmesh.coordinator.chain.router import settle_now
from quackmesh.coordinator.db.models import Job, Rental, Slash
from quackmesh.coordinator.deps import ReadSigner, RuntimeDep, SubmitSigner
from quackmesh.coordinator.events.service import emit
from quackmesh.core.errors import DevModeOnly, ValidationFailed
from quackmesh.core.ids import normalize_address
from quackmesh.core.schemas import (
    BalancePublic,
    FaucetCreate,
    JobState,
    LedgerCheckPublic,
    SlashListPublic,
    StakeCreate,
    StakePublic,
)
from quackmesh.ledger import (
    job_escrow_account,
    rental_escrow_account,
    stake_account,
    wallet_account,
    write_jsonl,
)

router = APIRouter(prefix="/v1", tags=["money"])


def _balance(rt: RuntimeDep, address: str) -> BalancePublic:
    with rt.reads() as session:
        open_jobs = session.scalars(
            select(Job.id).where(
                Job.owner == address, Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value])
            )
        )
        in_escrow = sum(rt.ledger.balance(session, job_escrow_account(j)) for j in open_jobs)
        rentals = session.scalars(
            select(Rental.id).where(Rental.client == address, Rental.state == "active")
        )
        in_escrow += sum(rt.ledger.balance(session, rental_escrow_account(r)) for r in rentals)
        available = rt.ledger.balance(session, wallet_account(address))
        staked = rt.ledger.balance(session, stake_account(address))
    return BalancePublic(address=address, available=available, in_escrow=in_escrow, staked=staked)


@router.post("/faucet", response_model=BalancePublic)
def faucet(body: FaucetCreate, signer: SubmitSigner, rt: RuntimeDep) -> BalancePublic:
    """Mint development DUCK to the signer. Refused unless the coordinator is in dev mode."""
    if not rt.settings.dev_mode:
        raise DevModeOnly("the faucet only exists in development mode (QUACKMESH_DEV_MODE=1)")
    if body.amount > rt.settings.faucet_max:
        raise ValidationFailed(
            f"at most {rt.settings.faucet_max} micro-DUCK per call", field="amount"
        )
    if rt.chain is not None:
        # Chain mode: no unbacked DUCK. Real tokens are minted and deposited into the
        # Vault for the signer; the credit is that deposit's, once confirmed.
        chain_service.faucet_deposit(rt, rt.chain, address=signer, amount=body.amount)
        settle_now(rt, rt.chain)
        return _balance(rt, signer)
    with rt.sessions.begin() as session:
        rt.ledger.faucet(session, address=signer, amount=body.amount)
        emit(session, "faucet.minted", address=signer, amount=body.amount)
    return _balance(rt, signer)


@router.get("/balance", response_model=BalancePublic)
def balance(signer: ReadSigner, rt: RuntimeDep) -> BalancePublic:
    return _balance(rt, signer)


@router.get("/ledger/check", response_model=LedgerCheckPublic)
def ledger_check(rt: RuntimeDep) -> LedgerCheckPublic:
    """Recompute the hash chain and the zero sum (public: anyone may audit the ledger)."""
    with rt.reads() as session:
        check = rt.ledger.verify(session)
    return LedgerCheckPublic(
        ok=check.ok,
        transactions=check.transactions,
        head=check.head,
        total=check.total,
        problems=list(check.problems),
    )


@router.get("/ledger/journal", response_class=PlainTextResponse)
def ledger_journal(
    rt: RuntimeDep,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=1000, ge=1, le=10_000),
) -> PlainTextResponse:
    """Journal transactions after seq ``after`` as JSON Lines, with entries and chain hashes.

    Public on purpose: anyone can re-hash the chain and check the zero sum
    (``quackmesh ledger verify --coordinator URL``) without trusting this server.
    """
    buffer = io.StringIO()
    with rt.reads() as session:
        write_jsonl(rt.ledger.iter_journal(session, after_seq=after, limit=limit), buffer)
    return PlainTextResponse(buffer.getvalue(), media_type="application/x-ndjson")


@router.post("/stake", response_model=StakePublic)
def stake(body: StakeCreate, signer: SubmitSigner, rt: RuntimeDep) -> StakePublic:
    """Move DUCK from the signer's wallet into its stake (402 if the wallet lacks it)."""
    with rt.sessions.begin() as session:
        add_stake(rt, session, address=signer, amount=body.amount)
        public = stake_public(rt, session, signer)
    rt.notifier.notify()  # a node that just became eligible may claim work
    return public


@router.post("/stake/unstake", response_model=StakePublic)
def unstake(body: StakeCreate, signer: SubmitSigner, rt: RuntimeDep) -> StakePublic:
    """Start unbonding: the amount stops counting now and is paid out after the unbonding
    period; until then it can still be slashed."""
    with rt.sessions.begin() as session:
        release_matured(rt, session, now=time.time(), address=signer)
        request_unstake(rt, session, address=signer, amount=body.amount, now=time.time())
        session.flush()
        return stake_public(rt, session, signer)


@router.get("/stake/{address}", response_model=StakePublic)
def read_stake(address: str, rt: RuntimeDep) -> StakePublic:
    """Anyone's stake (public: clients choose providers by it)."""
    try:
        address = normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {address!r}", field="address") from exc
    with rt.reads() as session:
        return stake_public(rt, session, address)


@router.get("/slashes", response_model=SlashListPublic)
def slashes(
    rt: RuntimeDep,
    node: str | None = None,
    job_id: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> SlashListPublic:
    """Slashes with their evidence, newest first (public, so anyone can audit them)."""
    stmt = select(Slash).order_by(Slash.at.desc()).limit(limit)
    if node is not None:
        try:
            stmt = stmt.where(Slash.node == normalize_address(node))
        except (ValueError, TypeError) as exc:
            raise ValidationFailed(f"not an address: {node!r}", field="node") from exc
    if job_id is not None:
        stmt = stmt.where(Slash.job_id == job_id)
    with rt.reads() as session:
        return SlashListPublic(slashes=[slash_public(r) for r in session.scalars(stmt)])
