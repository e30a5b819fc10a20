"""Property: whatever happens, off-chain DUCK never exceeds the tokens the Vault holds.

Random sequences of deposits, payments, stakes, withdrawals (redeemed, left to expire or
never synced), epochs and stray token transfers run against a real coordinator runtime on
an in-process EVM; after every step the spendable side of the ledger (everything but the
Vault's own account and the vouchers in flight) is at most ``DuckToken.balanceOf(vault)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quackmesh.coordinator.app import build_runtime
from quackmesh.coordinator.chain import service
from quackmesh.coordinator.runtime import Runtime
from quackmesh.coordinator.settings import Settings
from quackmesh.core.errors import ChainReverted, InsufficientBalance
from quackmesh.core.wallet import Wallet
from quackmesh.ledger import VAULT, stake_account, wallet_account

USERS = [Wallet.create().address for _ in range(3)]
AMOUNT = st.integers(min_value=1, max_value=5_000_000)
USER = st.integers(min_value=0, max_value=len(USERS) - 1)
DEPOSIT = st.tuples(st.just("deposit"), USER, AMOUNT, st.booleans())  # synced or not yet
WITHDRAW = st.tuples(st.just("withdraw"), USER, AMOUNT, st.booleans())  # redeemed at once?
OPS = st.one_of(
    DEPOSIT,
    DEPOSIT,
    WITHDRAW,
    WITHDRAW,
    st.tuples(st.just("sync")),
    st.tuples(st.just("pay"), USER, USER, AMOUNT),
    st.tuples(st.just("stake"), USER, AMOUNT),
    st.tuples(st.just("redeem"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("epoch")),
    st.tuples(st.just("stray"), AMOUNT),
)


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    home: Path = tmp_path_factory.mktemp("backing")
    runtime = build_runtime(
        Settings(home=home, dev_mode=True, chain="local", access_log=False, voucher_ttl_s=600)
    )
    yield runtime
    runtime.engine.dispose()


def held_off_chain(rt: Runtime) -> int:
    with rt.reads() as session:
        balances = rt.ledger.balances(session)
    return sum(v for a, v in balances.items() if a != VAULT and not a.startswith("withdrawal:"))


STRAY: list[int] = []  # tokens sent to the Vault outside deposit (shared runtime: cumulative)


def deposited_tokens(rt: Runtime) -> int:
    """What the Vault holds for the ledger: its balance less the stray tokens."""
    assert rt.chain is not None
    return rt.chain.vault_balance() - sum(STRAY)


def step(rt: Runtime, op: tuple[Any, ...], vouchers: list[Any]) -> None:
    link = rt.chain
    assert link is not None
    kind = op[0]
    try:
        if kind == "deposit":
            service.faucet_deposit(rt, link, address=USERS[op[1]], amount=op[2])
            if op[3]:
                service.sync(rt, link)
        elif kind == "sync":
            service.sync(rt, link)
        elif kind in ("pay", "stake"):
            src = wallet_account(USERS[op[1]])
            dst = stake_account(USERS[op[1]]) if kind == "stake" else wallet_account(USERS[op[2]])
            if src != dst:
                with rt.sessions.begin() as session:
                    rt.ledger.transfer(session, src=src, dst=dst, amount=op[-1], kind=kind)
        elif kind == "withdraw":
            voucher = service.request_withdrawal(rt, link, address=USERS[op[1]], amount=op[2])
            vouchers.append(voucher)
            if op[3]:
                service.relay_withdrawal(rt, link, voucher)
                service.sync(rt, link)
        elif kind == "redeem" and vouchers:
            service.relay_withdrawal(rt, link, vouchers[op[1] % len(vouchers)])
        elif kind == "expire":
            tester = link.client.w3.provider.ethereum_tester
            latest = link.block_time(link.head())
            tester.time_travel(latest + rt.settings.voucher_ttl_s + 10)
            service.sync(rt, link)
            service.expire_vouchers(rt, link, now=latest + rt.settings.voucher_ttl_s + 20)
        elif kind == "epoch":
            epoch = service.close_epoch(rt, link, force=True)
            if epoch is not None:  # the Vault itself refuses a total it does not hold
                assert epoch.total <= link.vault_balance()
        elif kind == "stray":  # tokens sent to the Vault without a deposit credit nobody
            link.transact(link.token.functions.mint(link.vault_address, op[1]))
            STRAY.append(op[1])
    except InsufficientBalance:
        pass  # refused, nothing written
    except ChainReverted as exc:  # a voucher used twice or after its expiry
        assert "voucher" in str(exc)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=1, max_size=15))
def test_off_chain_balances_never_exceed_the_vaults_tokens(
    rt: Runtime, ops: list[tuple[Any, ...]]
) -> None:
    assert rt.chain is not None
    vouchers: list[Any] = []
    for op in ops:
        step(rt, op, vouchers)
        assert held_off_chain(rt) <= deposited_tokens(rt), op
    service.sync(rt, rt.chain)
    with rt.reads() as session:
        assert rt.ledger.verify(session).ok
        backed = -rt.ledger.balance(session, VAULT)
    # Synced, the Vault's side of the ledger is exactly what was deposited and not paid out.
    assert backed == deposited_tokens(rt)
