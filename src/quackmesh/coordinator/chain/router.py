"""Chain endpoints: what the coordinator settles against, deposits, withdrawals, proofs.

Reads about the chain and the balance proofs are public (anyone may audit them); the
deposit and withdrawal endpoints act for the signer only.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from quackmesh.coordinator.chain import service
from quackmesh.coordinator.chain.link import ChainLink
from quackmesh.coordinator.db.models import (
    BalanceEpoch,
    ChainDeposit,
    ChainState,
    WithdrawalVoucher,
)
from quackmesh.coordinator.deps import ReadSigner, RuntimeDep, SubmitSigner
from quackmesh.coordinator.runtime import Runtime
from quackmesh.core.chain_schemas import (
    ChainAccountPublic,
    ChainEpochListPublic,
    ChainInfoPublic,
    ChainRootPublic,
    DepositListPublic,
    PermitDepositCreate,
    ProofPublic,
    RelayPublic,
    TokenFaucetCreate,
    VoucherListPublic,
    VoucherPublic,
    WithdrawalCreate,
)
from quackmesh.core.errors import ChainDisabled, ChainError, DevModeOnly, ValidationFailed
from quackmesh.core.ids import normalize_address
from quackmesh.ledger import VAULT

router = APIRouter(prefix="/v1/chain", tags=["chain"])


def _link(rt: Runtime) -> ChainLink:
    if rt.chain is None:
        raise ChainDisabled("this coordinator runs without a chain (QUACKMESH_CHAIN=off)")
    return rt.chain


def settle_now(rt: Runtime, link: ChainLink) -> None:
    """With no confirmations to wait for, apply what was just mined before answering."""
    if link.client.confirmations == 0:
        service.sync(rt, link)


@router.get("", response_model=ChainInfoPublic)
def chain_info(rt: RuntimeDep) -> ChainInfoPublic:
    """The chain, the contracts and how far the coordinator has applied them (public)."""
    link = _link(rt)
    with rt.reads() as session:
        state = session.get(ChainState, link.vault_address)
        last = service.latest_epoch(session, link.vault_address)
        backed = -rt.ledger.balance(session, VAULT)
        last_public = service.epoch_public(last) if last is not None else None
    return ChainInfoPublic(
        mode="local" if link.local else "rpc",
        chain_id=link.deployment.chain_id,
        token=link.deployment.token,
        vault=link.vault_address,
        operator=link.operator,
        confirmations=link.client.confirmations,
        epoch_s=rt.settings.chain_epoch_s,
        scanned_block=int(state.scanned_block) if state is not None else -1,
        head_block=link.head(),
        vault_balance=link.vault_balance(),
        backed=backed,
        last_epoch=last_public,
    )


@router.get("/epochs", response_model=ChainEpochListPublic)
def epochs(rt: RuntimeDep, limit: int = Query(default=20, ge=1, le=500)) -> ChainEpochListPublic:
    """Balance roots, newest first (public)."""
    link = _link(rt)
    with rt.reads() as session:
        rows = session.scalars(
            select(BalanceEpoch)
            .where(BalanceEpoch.vault == link.vault_address)
            .order_by(BalanceEpoch.epoch.desc())
            .limit(limit)
        )
        return ChainEpochListPublic(epochs=[service.epoch_public(r) for r in rows])


@router.get("/roots/{epoch}", response_model=ChainRootPublic)
def root(epoch: int, rt: RuntimeDep) -> ChainRootPublic:
    """``Vault.roots(epoch)`` read from the chain now, not from this server's database."""
    link = _link(rt)
    if epoch < 1 or epoch >= 2**256:
        raise ValidationFailed("epoch must be a positive uint256", field="epoch")
    got = link.call(link.vault.functions.roots(epoch))
    return ChainRootPublic(
        epoch=epoch,
        root="0x" + bytes(got[0]).hex(),
        journal_head="0x" + bytes(got[1]).hex(),
        total=int(got[2]),
        posted_at=int(got[3]),
    )


@router.get("/accounts/{address}", response_model=ChainAccountPublic)
def account(address: str, rt: RuntimeDep) -> ChainAccountPublic:
    """An address's DUCK tokens, permit nonce and gas balance, read from the chain now."""
    link = _link(rt)
    try:
        address = normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {address!r}", field="address") from exc
    token = link.token.functions
    with link.lock:
        native = int(link.client.w3.eth.get_balance(address))
    return ChainAccountPublic(
        address=address,
        token_balance=int(link.call(token.balanceOf(address))),
        permit_nonce=int(link.call(token.nonces(address))),
        native_balance=native,
    )


@router.get("/proof/{address}", response_model=ProofPublic)
def proof(
    address: str, rt: RuntimeDep, epoch: int | None = Query(default=None, ge=1)
) -> ProofPublic:
    """``address``'s wallet balance in a posted epoch with its Merkle proof (public: the
    journal is public too). Check it against the Vault with ``quackmesh ledger
    check-proof``, which trusts the chain, not this server."""
    link = _link(rt)
    try:
        address = normalize_address(address)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed(f"not an address: {address!r}", field="address") from exc
    return service.proof_for(rt, link, address, epoch=epoch)


@router.get("/deposits", response_model=DepositListPublic)
def deposits(
    signer: ReadSigner, rt: RuntimeDep, limit: int = Query(default=100, ge=1, le=1000)
) -> DepositListPublic:
    """The signer's credited deposits, newest first."""
    link = _link(rt)
    with rt.reads() as session:
        rows = session.scalars(
            select(ChainDeposit)
            .where(ChainDeposit.vault == link.vault_address, ChainDeposit.account == signer)
            .order_by(ChainDeposit.deposit_id.desc())
            .limit(limit)
        )
        return DepositListPublic(deposits=[service.deposit_public(r) for r in rows])


@router.post("/deposits", response_model=RelayPublic)
def deposit_with_permit(
    body: PermitDepositCreate, signer: SubmitSigner, rt: RuntimeDep
) -> RelayPublic:
    """Gasless deposit: relay the signer's EIP-2612 permit to ``deposit_with_permit_for``.
    A bad or expired permit is a 409 ``chain_reverted`` with the token's reason."""
    link = _link(rt)
    before = _deposit_count(rt, link, signer)
    tx_hash = service.relay_permit_deposit(rt, link, address=signer, body=body)
    settle_now(rt, link)
    return RelayPublic(tx_hash=tx_hash, credited=_deposit_count(rt, link, signer) > before)


def _deposit_count(rt: Runtime, link: ChainLink, account: str) -> int:
    with rt.reads() as session:
        count = session.scalar(
            select(func.count())
            .select_from(ChainDeposit)
            .where(ChainDeposit.vault == link.vault_address, ChainDeposit.account == account)
        )
        return int(count or 0)


@router.post("/withdrawals", response_model=VoucherPublic)
def withdraw(body: WithdrawalCreate, signer: SubmitSigner, rt: RuntimeDep) -> VoucherPublic:
    """Move DUCK out of the wallet into a signed voucher (402 without the balance). With
    ``relay`` the coordinator also submits it (``withdraw_for``: the tokens go to the
    signer's address); otherwise submit it yourself with ``Vault.withdraw``."""
    link = _link(rt)
    voucher = service.request_withdrawal(rt, link, address=signer, amount=body.amount)
    if not body.relay:
        return voucher
    try:
        service.relay_withdrawal(rt, link, voucher)
    except ChainError as exc:  # the voucher stands: say which, so it can be used or waited out
        context = {**exc.context, "voucher_id": voucher.id, "expiry": voucher.expiry}
        raise type(exc)(
            f"{exc} — voucher {voucher.id} is signed and pending: submit it with "
            f"Vault.withdraw yourself, or its DUCK returns to the wallet after it expires",
            **context,
        ) from exc
    settle_now(rt, link)
    return _voucher(rt, link, voucher.id)


def _voucher(rt: Runtime, link: ChainLink, voucher_id: int) -> VoucherPublic:
    with rt.reads() as session:
        row = session.get(WithdrawalVoucher, voucher_id)
        assert row is not None
        return service.voucher_public(row, chain_id=link.deployment.chain_id)


@router.get("/withdrawals", response_model=VoucherListPublic)
def withdrawals(
    signer: ReadSigner, rt: RuntimeDep, limit: int = Query(default=100, ge=1, le=1000)
) -> VoucherListPublic:
    """The signer's vouchers, newest first, with their state (pending, paid, expired)."""
    link = _link(rt)
    with rt.reads() as session:
        rows = session.scalars(
            select(WithdrawalVoucher)
            .where(WithdrawalVoucher.account == signer)
            .order_by(WithdrawalVoucher.id.desc())
            .limit(limit)
        )
        chain_id = link.deployment.chain_id
        return VoucherListPublic(
            vouchers=[service.voucher_public(r, chain_id=chain_id) for r in rows]
        )


@router.post("/faucet", response_model=RelayPublic)
def token_faucet(body: TokenFaucetCreate, signer: SubmitSigner, rt: RuntimeDep) -> RelayPublic:
    """Development only: mint DUCK *tokens* to the signer's address on chain (and a little
    ETH for gas), to try a deposit from a real token balance."""
    link = _link(rt)
    if not rt.settings.dev_mode:
        raise DevModeOnly("the token faucet only exists in development mode")
    if body.amount > rt.settings.faucet_max:
        raise ValidationFailed(
            f"at most {rt.settings.faucet_max} micro-DUCK per call", field="amount"
        )
    receipt = link.transact(link.token.functions.mint(signer, body.amount))
    if rt.settings.chain_faucet_gas_wei:
        service.send_gas(link, signer, rt.settings.chain_faucet_gas_wei)
    return RelayPublic(tx_hash="0x" + bytes(receipt["transactionHash"]).hex(), credited=False)
