"""The anvil fixture itself: a real node, transactions with checked receipts, fresh state."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _send(w3: Any, value: int) -> Any:
    sender, receiver = w3.eth.accounts[0], w3.eth.accounts[1]
    tx = w3.eth.send_transaction({"from": sender, "to": receiver, "value": value})
    return w3.eth.wait_for_transaction_receipt(tx, timeout=10)


def test_a_transfer_is_mined_with_a_successful_receipt(w3: Any) -> None:
    before = w3.eth.get_balance(w3.eth.accounts[1])
    receipt = _send(w3, 10**18)
    assert receipt["status"] == 1
    assert w3.eth.get_balance(w3.eth.accounts[1]) == before + 10**18


def test_each_test_starts_from_the_same_state(w3: Any) -> None:
    # The previous test's transfer was reverted by evm_revert: the dev account is untouched.
    assert w3.eth.get_balance(w3.eth.accounts[1]) == 10_000 * 10**18
    assert w3.eth.get_transaction_count(w3.eth.accounts[0]) == 0
