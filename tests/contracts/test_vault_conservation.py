"""Conservation: whatever the sequence, the vault holds deposits minus withdrawals."""

from __future__ import annotations

from typing import Any

import boa
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import key
from .support import ONE_DUCK, in_one_hour, sign_voucher

HOLDERS = [key(f"holder {i}") for i in range(3)]

# (kind, holder index, amount): a deposit, or a voucher withdrawal of up to what is left.
steps = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "withdraw"]),
        st.integers(0, len(HOLDERS) - 1),
        st.integers(1, 50 * ONE_DUCK),
    ),
    max_size=12,
)


# The fixtures are deployed once per test; each example runs in its own boa anchor, so
# the chain state they share is rolled back between examples.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps)
def test_vault_balance_is_deposits_minus_withdrawals(
    vault: Any, token: Any, minter: str, signer: LocalAccount, steps: list[tuple[str, int, int]]
) -> None:
    with boa.env.anchor():
        with boa.env.prank(minter):
            for holder in HOLDERS:
                token.mint(holder.address, 1_000 * ONE_DUCK)
        supply = token.totalSupply()
        deposited = withdrawn = 0
        credit = [0] * len(HOLDERS)  # what the off-chain ledger would owe each holder
        for nonce, (kind, index, amount) in enumerate(steps):
            holder = HOLDERS[index]
            if kind == "deposit":
                with boa.env.prank(holder.address):
                    token.approve(vault.address, amount)
                    vault.deposit(amount)
                deposited += amount
                credit[index] += amount
            else:
                amount = min(amount, credit[index])
                if amount == 0:
                    continue
                expiry = in_one_hour()
                sig = sign_voucher(
                    signer,
                    vault,
                    account=holder.address,
                    amount=amount,
                    nonce=nonce,
                    expiry=expiry,
                )
                with boa.env.prank(holder.address):
                    vault.withdraw(amount, nonce, expiry, sig.v, sig.r, sig.s)
                withdrawn += amount
                credit[index] -= amount
            assert token.balanceOf(vault.address) == deposited - withdrawn == sum(credit)
        assert token.totalSupply() == supply
        assert (
            sum(token.balanceOf(h.address) for h in HOLDERS) + token.balanceOf(vault.address)
            == 3_000 * ONE_DUCK
        )
