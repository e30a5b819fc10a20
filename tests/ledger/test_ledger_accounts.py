"""Account names: builders checksum addresses, validation refuses anything ambiguous."""

from __future__ import annotations

import pytest

from quackmesh.core.errors import ValidationFailed
from quackmesh.ledger import (
    MINT,
    TREASURY,
    is_escrow_account,
    is_valid_account,
    job_escrow_account,
    rental_escrow_account,
    stake_account,
    validate_account,
    wallet_account,
)

from .ledger_support import ALICE


def test_builders_checksum_addresses_and_prefix_ids() -> None:
    assert wallet_account(ALICE.lower()) == f"wallet:{ALICE}"
    assert stake_account(ALICE.upper().replace("0X", "0x")) == f"stake:{ALICE}"
    assert job_escrow_account("job_3f9c") == "escrow:job:job_3f9c"
    assert rental_escrow_account("rent-1.a") == "escrow:rental:rent-1.a"


@pytest.mark.parametrize(
    "name",
    [TREASURY, MINT, f"wallet:{ALICE}", f"stake:{ALICE}", "escrow:job:j1", "escrow:rental:r1"],
)
def test_valid_account_names(name: str) -> None:
    assert is_valid_account(name)
    assert validate_account(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "wallet:",
        f"wallet:{ALICE.lower()}",  # not checksummed: would split one actor's money
        "wallet:0x1234",
        "escrow:job:",
        "escrow:job:has space",
        "escrow:other:x",
        "escrow:job:" + "x" * 118,  # 129 characters, wider than the column
        "Treasury",
        None,
        42,
    ],
)
def test_invalid_account_names(name: object) -> None:
    assert not is_valid_account(name)
    with pytest.raises(ValidationFailed):
        validate_account(name)


@pytest.mark.parametrize("bad", ["", "0x1234", "not an address", "0x" + "g" * 40])
def test_address_builders_reject_bad_addresses(bad: str) -> None:
    with pytest.raises(ValidationFailed):
        wallet_account(bad)
    with pytest.raises(ValidationFailed):
        stake_account(bad)


@pytest.mark.parametrize("bad", ["", "has space", "a:b", "-leading", "x" * 118])
def test_escrow_builders_reject_bad_ids(bad: str) -> None:
    with pytest.raises(ValidationFailed):
        job_escrow_account(bad)
    with pytest.raises(ValidationFailed):
        rental_escrow_account(bad)


def test_is_escrow_account() -> None:
    assert is_escrow_account(job_escrow_account("j"))
    assert is_escrow_account(rental_escrow_account("r"))
    assert not is_escrow_account(TREASURY)
    assert not is_escrow_account(wallet_account(ALICE))
