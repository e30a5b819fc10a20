"""On-chain settlement: deposits in, vouchers out, a balance root each epoch.

How the off-chain ledger stays backed by the Vault (README "On-chain settlement"):

* DUCK enters only through a confirmed ``Deposit`` event: ``vault`` → ``wallet:<account>``,
  once per ``deposit_id`` (a primary key, so a re-read block credits nothing twice).
* A withdrawal moves ``wallet`` → ``withdrawal:<voucher id>`` and signs a voucher. The
  Vault pays it at most once; when the confirmed ``Withdrawal`` event arrives the DUCK
  leaves (``withdrawal:<id>`` → ``vault``); when its expiry has passed on chain unused,
  it goes back to the wallet.
* So ``-balance(vault)`` = confirmed deposits − confirmed withdrawals, and everything
  but ``vault`` and the ``withdrawal:`` accounts sums to at most what the Vault holds.

Each step is one database transaction: a block range of Vault events with the scan
cursor, one voucher, one expiry, one epoch snapshot, one epoch's posting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.crypto import keccak
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quackmesh.coordinator.chain.link import ChainLink
from quackmesh.coordinator.db.models import (
    BalanceEpoch,
    ChainDeposit,
    ChainState,
    Event,
    WithdrawalVoucher,
)
from quackmesh.coordinator.events.service import emit
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.chain_schemas import (
    ChainEpochPublic,
    DepositPublic,
    PermitDepositCreate,
    ProofPublic,
    VoucherPublic,
)
from quackmesh.core.errors import ChainError, InvalidState, NotFound
from quackmesh.core.ids import normalize_address
from quackmesh.ledger import VAULT, Posting, wallet_account, withdrawal_account
from quackmesh.ledger.merkle import balances_for_root, build_tree
from quackmesh.ledger.vouchers import sign_withdrawal

__all__ = [
    "SCAN_BLOCKS",
    "SyncResult",
    "close_epoch",
    "deposit_public",
    "epoch_public",
    "expire_vouchers",
    "faucet_deposit",
    "job_id_bytes",
    "latest_epoch",
    "proof_for",
    "relay_permit_deposit",
    "relay_withdrawal",
    "request_withdrawal",
    "send_gas",
    "sync",
    "voucher_public",
]

log = logging.getLogger("quackmesh.coordinator.chain")

SCAN_BLOCKS = 2_000  # Vault events read per eth_getLogs call (and per DB transaction)
MIRROR_BATCH = 256  # the Vault's MAX_BATCH for record_jobs / record_slashes
FINAL_JOB_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")


@dataclass(frozen=True)
class SyncResult:
    scanned_to: int
    deposits: int
    withdrawals: int


def _hex(value: Any) -> str:
    raw = bytes(value)
    return "0x" + raw.hex()


# --- events in: deposits and paid vouchers -----------------------------------------------


def sync(rt: Runtime, link: ChainLink, *, now: float | None = None) -> SyncResult:
    """Apply the Vault's ``Deposit`` and ``Withdrawal`` events up to the safe head."""
    t = time.time() if now is None else now
    safe = link.safe_head()
    vault = link.vault_address
    deposits = withdrawals = 0
    with rt.reads() as session:
        state = session.get(ChainState, vault)
        if state is None:
            raise ChainError(f"no chain state for Vault {vault}")
        start = int(state.scanned_block) + 1
    while start <= safe:
        end = min(start + SCAN_BLOCKS - 1, safe)
        deposit_logs = link.logs(link.vault.events.Deposit, from_block=start, to_block=end)
        withdrawal_logs = link.logs(link.vault.events.Withdrawal, from_block=start, to_block=end)
        with rt.sessions.begin() as session:
            row = session.get(ChainState, vault, with_for_update=True)
            assert row is not None
            if int(row.scanned_block) >= end:  # another coordinator thread got here first
                start = int(row.scanned_block) + 1
                continue
            for entry in _ordered(deposit_logs):
                deposits += _credit_deposit(rt, session, link, entry, now=t)
            for entry in _ordered(withdrawal_logs):
                withdrawals += _finish_withdrawal(rt, session, link, entry, now=t)
            row.scanned_block = end
        start = end + 1
    return SyncResult(scanned_to=max(start - 1, -1), deposits=deposits, withdrawals=withdrawals)


def _ordered(entries: Iterable[Any]) -> list[Any]:
    return sorted(entries, key=lambda e: (int(e["blockNumber"]), int(e["logIndex"])))


def _credit_deposit(
    rt: Runtime, session: Session, link: ChainLink, entry: Any, *, now: float
) -> int:
    args = entry["args"]
    deposit_id, amount = int(args["deposit_id"]), int(args["amount"])
    account = normalize_address(args["account"])
    if session.get(ChainDeposit, (link.vault_address, deposit_id)) is not None:
        return 0  # already credited (a restart re-read this block)
    tx_hash = _hex(entry["transactionHash"])
    session.add(
        ChainDeposit(
            vault=link.vault_address,
            deposit_id=deposit_id,
            account=account,
            amount=amount,
            block=int(entry["blockNumber"]),
            tx_hash=tx_hash,
            credited_at=now,
        )
    )
    rt.ledger.post(
        session,
        kind="deposit",
        memo=f"Vault deposit #{deposit_id}",
        postings=[Posting(VAULT, -amount), Posting(wallet_account(account), amount)],
        ref=f"deposit-{deposit_id}",
    )
    emit(
        session,
        "chain.deposited",
        address=account,
        at=now,
        amount=amount,
        deposit_id=deposit_id,
        tx_hash=tx_hash,
    )
    return 1


def _finish_withdrawal(
    rt: Runtime, session: Session, link: ChainLink, entry: Any, *, now: float
) -> int:
    args = entry["args"]
    nonce, amount = int(args["nonce"]), int(args["amount"])
    account = normalize_address(args["account"])
    voucher = session.get(WithdrawalVoucher, nonce, with_for_update=True)
    if (
        voucher is None
        or voucher.vault != link.vault_address
        or voucher.account != account
        or voucher.amount != amount
    ):
        # Only the signer key makes vouchers; one we never issued means the key leaked.
        log.error(
            "Withdrawal event for a voucher this coordinator did not issue",
            extra={"nonce": nonce, "account": account, "amount": amount},
        )
        return 0
    if voucher.state == "paid":
        return 0
    tx_hash = _hex(entry["transactionHash"])
    if voucher.state == "expired":  # cannot happen: expiry waits for the chain's clock
        log.error("an expired voucher was paid on chain", extra={"voucher": voucher.id})
        rt.ledger.transfer(
            session,
            src=wallet_account(account),
            dst=VAULT,
            amount=amount,
            kind="withdrawal",
            memo=f"voucher {voucher.id} paid after its expiry was credited back",
            ref=f"voucher-{voucher.id}",
        )
    else:
        rt.ledger.transfer(
            session,
            src=withdrawal_account(voucher.id),
            dst=VAULT,
            amount=amount,
            kind="withdrawal",
            memo=f"voucher {voucher.id} paid by the Vault",
            ref=f"voucher-{voucher.id}",
        )
    voucher.state, voucher.settled_at, voucher.tx_hash = "paid", now, tx_hash
    emit(
        session,
        "chain.withdrawn",
        address=account,
        at=now,
        amount=amount,
        voucher_id=voucher.id,
        tx_hash=tx_hash,
    )
    return 1


# --- vouchers out -------------------------------------------------------------------------


def voucher_public(row: WithdrawalVoucher, *, chain_id: int) -> VoucherPublic:
    sig = bytes.fromhex(row.signature[2:])
    return VoucherPublic(
        id=row.id,
        vault=row.vault,
        chain_id=chain_id,
        account=row.account,
        amount=row.amount,
        nonce=row.id,
        expiry=row.expiry,
        v=sig[64],
        r="0x" + sig[:32].hex(),
        s="0x" + sig[32:64].hex(),
        state=row.state,  # type: ignore[arg-type]
        created_at=row.created_at,
        settled_at=row.settled_at,
        tx_hash=row.tx_hash,
    )


def request_withdrawal(
    rt: Runtime, link: ChainLink, *, address: str, amount: int, now: float | None = None
) -> VoucherPublic:
    """Take ``amount`` out of the wallet into a voucher the Vault will pay (402 if the
    wallet lacks it). The expiry is on the chain's clock: its newest block plus the TTL."""
    t = time.time() if now is None else now
    chain_now = max(int(t), link.block_time(link.head()))
    expiry = chain_now + rt.settings.voucher_ttl_s
    with rt.sessions.begin() as session:
        row = WithdrawalVoucher(
            vault=link.vault_address,
            account=address,
            amount=amount,
            expiry=expiry,
            signature="",
            state="pending",
            created_at=t,
        )
        session.add(row)
        session.flush()  # the id is the voucher's nonce
        rt.ledger.transfer(
            session,
            src=wallet_account(address),
            dst=withdrawal_account(row.id),
            amount=amount,
            kind="withdraw",
            memo=f"withdrawal voucher {row.id}",
            ref=f"voucher-{row.id}",
        )
        signed = sign_withdrawal(
            link.key,
            vault=link.vault_address,
            chain_id=link.deployment.chain_id,
            account=address,
            amount=amount,
            nonce=row.id,
            expiry=expiry,
        )
        row.signature = "0x" + signed.r[2:] + signed.s[2:] + f"{signed.v:02x}"
        emit(
            session,
            "chain.voucher",
            address=address,
            at=t,
            amount=amount,
            voucher_id=row.id,
            expiry=expiry,
        )
        session.flush()
        return voucher_public(row, chain_id=link.deployment.chain_id)


def relay_withdrawal(rt: Runtime, link: ChainLink, voucher: VoucherPublic) -> str:
    """Submit a voucher with ``withdraw_for`` (the DUCK goes to its account); the tx hash."""
    receipt = link.transact(
        link.vault.functions.withdraw_for(
            voucher.account,
            voucher.amount,
            voucher.nonce,
            voucher.expiry,
            voucher.v,
            bytes.fromhex(voucher.r[2:]),
            bytes.fromhex(voucher.s[2:]),
        )
    )
    return _hex(receipt["transactionHash"])


def expire_vouchers(rt: Runtime, link: ChainLink, *, now: float | None = None) -> int:
    """Credit back the vouchers that can no longer be paid.

    The Vault pays a voucher only in a block whose timestamp is at most its expiry. Once
    every block up to one *later* than the expiry has been applied (the scan cursor), no
    block still to come can pay it, so its DUCK returns to the wallet.
    """
    t = time.time() if now is None else now
    with rt.reads() as session:
        state = session.get(ChainState, link.vault_address)
        if state is None or state.scanned_block < 0:
            return 0
        due = session.scalar(
            select(func.count())
            .select_from(WithdrawalVoucher)
            .where(
                WithdrawalVoucher.state == "pending",
                WithdrawalVoucher.vault == link.vault_address,
                WithdrawalVoucher.expiry < int(t),
            )
        )
        scanned = int(state.scanned_block)
    if not due:
        return 0
    scanned_time = link.block_time(scanned)
    with rt.reads() as session:
        ids = list(
            session.scalars(
                select(WithdrawalVoucher.id).where(
                    WithdrawalVoucher.state == "pending",
                    WithdrawalVoucher.vault == link.vault_address,
                    WithdrawalVoucher.expiry < scanned_time,
                )
            )
        )
    expired = 0
    for voucher_id in ids:
        with rt.sessions.begin() as session:
            row = session.get(WithdrawalVoucher, voucher_id, with_for_update=True)
            if row is None or row.state != "pending":
                continue
            used = bool(link.call(link.vault.functions.used_nonce(row.account, row.id)))
            if used:  # paid, its event not applied yet: leave it to sync
                continue
            rt.ledger.transfer(
                session,
                src=withdrawal_account(row.id),
                dst=wallet_account(row.account),
                amount=row.amount,
                kind="withdraw-expired",
                memo=f"voucher {row.id} expired unused",
                ref=f"voucher-{row.id}",
            )
            row.state, row.settled_at = "expired", t
            emit(
                session,
                "chain.voucher_expired",
                address=row.account,
                at=t,
                amount=row.amount,
                voucher_id=row.id,
            )
            expired += 1
    return expired


# --- deposits the coordinator submits ----------------------------------------------------


def relay_permit_deposit(
    rt: Runtime, link: ChainLink, *, address: str, body: PermitDepositCreate
) -> str:
    """Submit ``address``'s EIP-2612 permit with ``deposit_with_permit_for`` (gasless for
    the depositor); the DUCK comes from and is credited to ``address``. The tx hash."""
    receipt = link.transact(
        link.vault.functions.deposit_with_permit_for(
            address,
            body.amount,
            body.deadline,
            body.v,
            bytes.fromhex(body.r[2:]),
            bytes.fromhex(body.s[2:]),
        )
    )
    return _hex(receipt["transactionHash"])


def send_gas(link: ChainLink, to: str, wei: int) -> None:
    """Send ``wei`` of the chain's native coin from the operator (development faucet)."""
    with link.lock:
        link.client.send_value(to, wei, confirm=False)


def faucet_deposit(rt: Runtime, link: ChainLink, *, address: str, amount: int) -> str:
    """Development faucet in chain mode: mint real DUCK to the operator and deposit it
    for ``address``, so the credit is a ``Deposit`` like any other (and backed)."""
    link.transact(link.token.functions.mint(link.operator, amount))
    receipt = link.transact(link.vault.functions.deposit_for(address, amount))
    return _hex(receipt["transactionHash"])


# --- epochs: the balance root on chain -----------------------------------------------------


def epoch_public(row: BalanceEpoch) -> ChainEpochPublic:
    return ChainEpochPublic(
        epoch=row.epoch,
        root=row.root,
        journal_seq=row.journal_seq,
        journal_head=row.journal_head,
        total=row.total,
        accounts=len(row.balances),
        state=row.state,  # type: ignore[arg-type]
        created_at=row.created_at,
        posted_at=row.posted_at,
        tx_hash=row.tx_hash,
        block=row.block,
    )


def latest_epoch(session: Session, vault: str) -> BalanceEpoch | None:
    """The newest epoch snapshot of ``vault`` (pending or posted), if any."""
    stmt = (
        select(BalanceEpoch)
        .where(BalanceEpoch.vault == vault)
        .order_by(BalanceEpoch.epoch.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def job_id_bytes(job_id: str) -> bytes:
    """The bytes32 a job id is mirrored on chain as: keccak256 of its UTF-8 bytes."""
    return keccak(job_id.encode())


def _snapshot(rt: Runtime, link: ChainLink, *, now: float) -> int | None:
    """Write the next epoch's snapshot (``pending``); None when nothing changed."""
    with rt.sessions.begin() as session:
        # Reading under the ledger's head lock: no transaction lands between the balances
        # and the head hash, so the root commits to exactly that journal prefix.
        seq, head = rt.ledger.head(session, lock=True)
        last = latest_epoch(session, link.vault_address)
        if last is not None and last.journal_seq == seq:
            return None
        balances = balances_for_root(rt.ledger.balances(session, prefix="wallet:"))
        tree = build_tree(balances)
        last_event = session.scalar(select(func.max(Event.id))) or 0
        epoch = BalanceEpoch(
            vault=link.vault_address,
            epoch=(last.epoch + 1) if last is not None else 1,
            root="0x" + tree.root.hex(),
            journal_seq=seq,
            journal_head="0x" + head,
            total=tree.total,
            balances=dict(balances),
            first_event=last.last_event if last is not None else 0,
            last_event=int(last_event),
            state="pending",
            created_at=now,
        )
        session.add(epoch)
        return epoch.epoch


def close_epoch(
    rt: Runtime, link: ChainLink, *, now: float | None = None, force: bool = False
) -> ChainEpochPublic | None:
    """Post a pending epoch, or snapshot and post a new one when ``chain_epoch_s`` has
    passed (``force``: now) and the journal moved. Returns the epoch posted, if any."""
    t = time.time() if now is None else now
    with rt.reads() as session:
        last = latest_epoch(session, link.vault_address)
        pending = last.epoch if last is not None and last.state == "pending" else None
        last_at = last.created_at if last is not None else None
    if pending is not None and _outpaced(rt, link, pending):
        pending = None  # discarded: snapshot again, now
    elif pending is None and not force and last_at is not None:
        due = t - last_at >= rt.settings.chain_epoch_s
        if not due:
            return None
    if pending is None:
        pending = _snapshot(rt, link, now=t)
        if pending is None:
            return None
    return _post(rt, link, pending, now=t)


def _outpaced(rt: Runtime, link: ChainLink, epoch_no: int) -> bool:
    """Drop a pending snapshot the Vault can no longer cover, if it never reached the chain.

    A voucher paid between a snapshot and its posting lowers the Vault's balance below the
    snapshot's total (the wallet still held that DUCK then), and ``post_root`` would revert
    on every pass. Such a snapshot is deleted and its epoch number taken by a fresh one.
    """
    with rt.reads() as session:
        row = session.get(BalanceEpoch, (link.vault_address, epoch_no))
        total = row.total if row is not None else 0
    if total <= link.vault_balance():
        return False
    if int(link.call(link.vault.functions.roots(epoch_no))[3]) != 0:
        return False  # already on chain: only the database's record is behind
    with rt.sessions.begin() as session:
        row = session.get(BalanceEpoch, (link.vault_address, epoch_no), with_for_update=True)
        if row is not None and row.state == "pending":
            session.delete(row)
    log.info("re-snapshotting epoch %s: its total outgrew the Vault's balance", epoch_no)
    return True


def _post(rt: Runtime, link: ChainLink, epoch_no: int, *, now: float) -> ChainEpochPublic:
    with rt.reads() as session:
        row = session.get(BalanceEpoch, (link.vault_address, epoch_no))
        assert row is not None
        root, head, total = row.root, row.journal_head, row.total
        first_event, last_event = row.first_event, row.last_event
        posted, finalized, slashes = _mirror(session, first_event, last_event)
    vault = link.vault.functions
    on_chain = link.call(vault.roots(epoch_no))
    if int(on_chain[3]) == 0:  # posted_at: not there yet (a restart may find it there)
        receipt = link.transact(
            vault.post_root(epoch_no, bytes.fromhex(root[2:]), bytes.fromhex(head[2:]), total)
        )
        tx_hash, block = _hex(receipt["transactionHash"]), int(receipt["blockNumber"])
        # The life-cycle mirror is informational and at-least-once: a crash between here
        # and the commit below replays it.
        for chunk_posted, chunk_final in _pairs(posted, finalized):
            link.transact(vault.record_jobs(epoch_no, chunk_posted, chunk_final))
        for i in range(0, len(slashes), MIRROR_BATCH):
            chunk = slashes[i : i + MIRROR_BATCH]
            link.transact(
                vault.record_slashes(epoch_no, [p for p, _ in chunk], [a for _, a in chunk])
            )
    else:
        tx_hash, block = None, None
    with rt.sessions.begin() as session:
        row = session.get(BalanceEpoch, (link.vault_address, epoch_no), with_for_update=True)
        assert row is not None
        row.state, row.posted_at = "posted", now
        row.tx_hash, row.block = tx_hash, block
        emit(session, "chain.root_posted", at=now, epoch=epoch_no, root=root, total=total)
        session.flush()
        return epoch_public(row)


def _mirror(
    session: Session, first_event: int, last_event: int
) -> tuple[list[bytes], list[bytes], list[tuple[str, int]]]:
    rows = session.execute(
        select(Event.type, Event.job_id, Event.node, Event.data)
        .where(Event.id > first_event, Event.id <= last_event)
        .where(Event.type.in_(["job.submitted", *FINAL_JOB_EVENTS, "node.slashed"]))
        .order_by(Event.id)
    )
    posted: list[bytes] = []
    finalized: list[bytes] = []
    slashes: list[tuple[str, int]] = []
    for type_, job_id, node, data in rows:
        if type_ == "node.slashed" and node:
            slashes.append((node, int((data or {}).get("amount", 0))))
        elif job_id and type_ == "job.submitted":
            posted.append(job_id_bytes(job_id))
        elif job_id:
            finalized.append(job_id_bytes(job_id))
    return posted, finalized, slashes


def _pairs(a: Sequence[bytes], b: Sequence[bytes]) -> list[tuple[list[bytes], list[bytes]]]:
    out = []
    for i in range(0, max(len(a), len(b)), MIRROR_BATCH):
        out.append((list(a[i : i + MIRROR_BATCH]), list(b[i : i + MIRROR_BATCH])))
    return out


def proof_for(
    rt: Runtime, link: ChainLink, address: str, *, epoch: int | None = None
) -> ProofPublic:
    """The Merkle proof of ``address``'s wallet balance in a posted epoch (the latest by
    default); 404 when there is no such epoch or the wallet was empty in it."""
    with rt.reads() as session:
        stmt = select(BalanceEpoch).where(
            BalanceEpoch.vault == link.vault_address, BalanceEpoch.state == "posted"
        )
        if epoch is not None:
            stmt = stmt.where(BalanceEpoch.epoch == epoch)
        row = session.scalars(stmt.order_by(BalanceEpoch.epoch.desc()).limit(1)).first()
        if row is None:
            what = f"epoch {epoch}" if epoch is not None else "epoch"
            raise NotFound(f"no posted {what} yet", epoch=epoch)
        tree = build_tree({k: int(v) for k, v in row.balances.items()})
        if "0x" + tree.root.hex() != row.root:
            raise InvalidState(
                f"the stored snapshot of epoch {row.epoch} does not hash to its root"
            )
        if address not in tree:
            raise NotFound(
                f"{address} had no DUCK in its wallet at epoch {row.epoch}",
                epoch=row.epoch,
                account=address,
            )
        proof = tree.balance_proof(address, epoch=row.epoch)
        return ProofPublic(
            epoch=row.epoch,
            account=address,
            balance=proof.balance,
            proof=list(proof.proof),
            root=row.root,
            chain_id=link.deployment.chain_id,
            vault=link.vault_address,
            journal_head=row.journal_head,
            tx_hash=row.tx_hash,
        )


def deposit_public(row: ChainDeposit) -> DepositPublic:
    return DepositPublic(
        deposit_id=row.deposit_id,
        account=row.account,
        amount=row.amount,
        block=row.block,
        tx_hash=row.tx_hash,
        credited_at=row.credited_at,
    )
