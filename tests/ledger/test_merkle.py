"""The balance Merkle tree: hand-computed roots and proofs, tampering, JSON, properties.

The expected values below are built in the test from ``keccak`` alone (the ABI encoding of
``(address, uint256)`` written out by hand as two 32-byte words), so they do not lean on
the module's own ``leaf_hash`` / ``node_hash``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from quackmesh.core.errors import LedgerInvariantBroken, NotFound, ValidationFailed
from quackmesh.core.ids import normalize_address
from quackmesh.ledger import merkle
from quackmesh.ledger.merkle import (
    EMPTY_ROOT,
    BalanceProof,
    balances_for_root,
    build_tree,
    leaf_hash,
    node_hash,
    verify_proof,
)

from .ledger_support import ALICE, BOB, CAROL, DUCK

DAVE = normalize_address("0x" + "d4" * 20)
ERIN = normalize_address("0x" + "e5" * 20)


def abi_word_address(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def hand_leaf(address: str, balance: int) -> bytes:
    encoded = abi_word_address(address) + balance.to_bytes(32, "big")
    return bytes(keccak(keccak(encoded)))


def hand_pair(a: bytes, b: bytes) -> bytes:
    return bytes(keccak(a + b if a <= b else b + a))


def sorted_leaves(balances: dict[str, int]) -> list[tuple[bytes, str]]:
    return sorted((hand_leaf(a, b), a) for a, b in balances.items())


# -- encoding ---------------------------------------------------------------------------


def test_leaf_is_double_keccak_of_abi_encoded_address_and_uint256() -> None:
    assert leaf_hash(ALICE, 5 * DUCK) == hand_leaf(ALICE, 5 * DUCK)
    assert leaf_hash(ALICE.lower(), 0) == hand_leaf(ALICE, 0)
    assert leaf_hash(BOB, 2**256 - 1) == hand_leaf(BOB, 2**256 - 1)


def test_matches_openzeppelin_standard_merkle_tree_readme_vector() -> None:
    # The two-leaf example from the @openzeppelin/merkle-tree README (an independent
    # implementation); with two leaves its layout and ours coincide. The Vault tests
    # should use the same vector.
    a, b = "0x" + "11" * 20, "0x" + "22" * 20
    tree = build_tree({a: 5 * 10**18, b: 25 * 10**17})
    assert tree.root.hex() == "d4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
    assert tree.proof(a) == [
        bytes.fromhex("b92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc")
    ]
    assert {leaf.hash.hex() for leaf in tree.leaves} == {
        "eb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283",
        "b92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc",
    }


def test_node_hash_is_order_independent() -> None:
    a, b = hand_leaf(ALICE, 1), hand_leaf(BOB, 2)
    assert node_hash(a, b) == node_hash(b, a) == hand_pair(a, b)


@pytest.mark.parametrize("balance", [-1, 2**256, True, 1.0, "5"])
def test_leaf_hash_rejects_bad_balances(balance: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        leaf_hash(ALICE, balance)
    assert info.value.context["field"] == "balance"


@pytest.mark.parametrize("account", ["", "0x1234", "0x" + "g1" * 20, ALICE[2:], None])
def test_leaf_hash_rejects_malformed_addresses(account: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        leaf_hash(account, 1)
    assert info.value.context["field"] == "account"


# -- known small trees -------------------------------------------------------------------


def test_empty_tree_has_zero_root() -> None:
    tree = build_tree({})
    assert tree.root == EMPTY_ROOT == bytes(32)
    assert tree.total == 0
    assert len(tree) == 0
    with pytest.raises(NotFound):
        tree.proof(ALICE)


def test_one_leaf_tree_root_is_the_leaf_and_proof_is_empty() -> None:
    tree = build_tree({ALICE: 7})
    assert tree.root == hand_leaf(ALICE, 7)
    assert tree.proof(ALICE) == []
    assert verify_proof(tree.root, ALICE, 7, [])


def test_two_leaf_tree() -> None:
    tree = build_tree({ALICE: 1, BOB: 2})
    a, b = hand_leaf(ALICE, 1), hand_leaf(BOB, 2)
    assert tree.root == hand_pair(a, b)
    assert tree.proof(ALICE) == [b]
    assert tree.proof(BOB) == [a]
    assert tree.total == 3


def test_three_leaf_tree_promotes_the_odd_leaf() -> None:
    balances = {ALICE: 10, BOB: 20, CAROL: 30}
    (l0, a0), (l1, a1), (l2, a2) = sorted_leaves(balances)
    n01 = hand_pair(l0, l1)
    tree = build_tree(balances)
    assert tree.root == hand_pair(n01, l2)
    assert tree.proof(a0) == [l1, l2]
    assert tree.proof(a1) == [l0, l2]
    assert tree.proof(a2) == [n01]  # promoted at level 0: no sibling there


def test_five_leaf_tree() -> None:
    balances = {ALICE: 1, BOB: 2, CAROL: 3, DAVE: 4, ERIN: 5}
    (l0, a0), (l1, a1), (l2, a2), (l3, a3), (l4, a4) = sorted_leaves(balances)
    n01, n23 = hand_pair(l0, l1), hand_pair(l2, l3)
    n0123 = hand_pair(n01, n23)
    tree = build_tree(balances)
    assert tree.root == hand_pair(n0123, l4)  # l4 promoted twice
    assert tree.proof(a0) == [l1, n23, l4]
    assert tree.proof(a1) == [l0, n23, l4]
    assert tree.proof(a2) == [l3, n01, l4]
    assert tree.proof(a3) == [l2, n01, l4]
    assert tree.proof(a4) == [n0123]
    assert tree.total == 15
    assert [leaf.account for leaf in tree.leaves] == [a0, a1, a2, a3, a4]
    assert tree.levels[0] == (l0, l1, l2, l3, l4)
    assert tree.levels[-1] == (tree.root,)


# -- proofs ------------------------------------------------------------------------------


FIVE = {ALICE: 1 * DUCK, BOB: 2 * DUCK, CAROL: 3 * DUCK, DAVE: 4 * DUCK, ERIN: 5 * DUCK}


@pytest.mark.parametrize("account", list(FIVE))
def test_every_proof_verifies_and_tampering_fails(account: str) -> None:
    tree = build_tree(FIVE)
    proof = tree.proof(account)
    balance = FIVE[account]
    assert tree.balance(account) == balance
    assert verify_proof(tree.root, account, balance, proof)
    assert verify_proof(tree.root, account.lower(), balance, proof)
    assert not verify_proof(tree.root, account, balance + 1, proof)
    other = next(a for a in FIVE if a != account)
    assert not verify_proof(tree.root, other, balance, proof)
    for i in range(len(proof)):
        tampered = list(proof)
        tampered[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
        assert not verify_proof(tree.root, account, balance, tampered)
    assert not verify_proof(tree.root, account, balance, proof[:-1])
    assert not verify_proof(bytes(32), account, balance, proof)


def test_verify_rejects_malformed_hashes() -> None:
    tree = build_tree(FIVE)
    with pytest.raises(ValidationFailed):
        verify_proof(tree.root[:31], ALICE, DUCK, tree.proof(ALICE))
    with pytest.raises(ValidationFailed):
        verify_proof(tree.root, ALICE, DUCK, [b"\x00" * 31])


def test_tree_is_independent_of_input_order_and_address_case() -> None:
    forward = build_tree(FIVE)
    backward = build_tree({a.lower(): b for a, b in reversed(FIVE.items())})
    assert forward == backward
    assert forward.root == backward.root


def test_build_rejects_duplicate_addresses_after_normalisation() -> None:
    with pytest.raises(ValidationFailed, match="twice"):
        build_tree({ALICE: 1, ALICE.lower(): 2})


def test_build_rejects_bad_balance() -> None:
    with pytest.raises(ValidationFailed):
        build_tree({ALICE: -1})


def test_absent_or_malformed_account_is_a_clear_error() -> None:
    tree = build_tree({ALICE: 1, BOB: 2})
    with pytest.raises(NotFound) as info:
        tree.proof(CAROL)
    assert info.value.context["account"] == CAROL
    with pytest.raises(NotFound):
        tree.balance(CAROL)
    with pytest.raises(ValidationFailed):
        tree.proof("nope")
    assert ALICE.lower() in tree
    assert CAROL not in tree
    assert "nope" not in tree


addresses = st.binary(min_size=20, max_size=20).map(lambda b: normalize_address("0x" + b.hex()))
balances_maps = st.dictionaries(addresses, st.integers(0, 2**256 - 1), max_size=40)


@settings(max_examples=60, deadline=None)
@given(balances_maps)
def test_every_account_proof_verifies_against_the_root(balances: dict[str, int]) -> None:
    tree = build_tree(balances)
    assert tree.total == sum(balances.values())
    assert len(tree) == len(balances)
    for account, balance in balances.items():
        assert verify_proof(tree.root, account, balance, tree.proof(account))
    if balances:
        account, balance = next(iter(balances.items()))
        wrong = balance + 1 if balance < 2**256 - 1 else balance - 1
        assert not verify_proof(tree.root, account, wrong, tree.proof(account))


# -- JSON proof --------------------------------------------------------------------------


def test_balance_proof_round_trips_through_json() -> None:
    tree = build_tree(FIVE)
    proof = tree.balance_proof(CAROL.lower(), epoch=3)
    assert proof.account == CAROL
    assert proof.balance == 3 * DUCK
    assert proof.root == "0x" + tree.root.hex()
    assert proof.proof_bytes == tree.proof(CAROL)
    text = proof.to_json()
    data = json.loads(text)
    assert set(data) == {"epoch", "account", "balance", "proof", "root"}
    assert all(len(h) == 66 and h.startswith("0x") for h in data["proof"])
    again = BalanceProof.from_json(text)
    assert again == proof
    assert again.verify()
    assert again.verify(tree.root)
    assert not again.verify(bytes(32))
    assert BalanceProof.from_json(proof.to_json(indent=2)) == proof


def test_balance_proof_from_json_normalises_case() -> None:
    proof = build_tree(FIVE).balance_proof(ALICE)
    data = proof.to_dict()
    data["account"] = ALICE.lower()
    data["root"] = "0x" + data["root"][2:].upper()
    parsed = BalanceProof.from_dict(data)
    assert parsed == proof
    assert parsed.epoch is None


def _good() -> dict[str, Any]:
    return build_tree(FIVE).balance_proof(ALICE, epoch=1).to_dict()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"root": "0x" + "ab" * 31}, "root"),  # 31 bytes
        ({"root": "ab" * 32}, "root"),  # no 0x
        ({"root": "0x" + "zz" * 32}, "root"),
        ({"root": None}, "root"),
        ({"proof": ["0x" + "ab" * 33]}, "proof"),
        ({"proof": "0x" + "ab" * 32}, "proof"),  # a string, not a list
        ({"proof": [1]}, "proof"),
        ({"account": "0x1234"}, "account"),
        ({"account": 7}, "account"),
        ({"balance": -1}, "balance"),
        ({"balance": 2**256}, "balance"),
        ({"balance": "1000000"}, "balance"),
        ({"balance": 1.5}, "balance"),
        ({"epoch": -1}, "epoch"),
        ({"epoch": True}, "epoch"),
        ({"epoch": "1"}, "epoch"),
    ],
)
def test_balance_proof_validation_names_the_field(change: dict[str, Any], field: str) -> None:
    data = _good() | change
    with pytest.raises(ValidationFailed) as info:
        BalanceProof.from_json(json.dumps(data))
    assert info.value.context["field"] == field


def test_balance_proof_rejects_missing_and_unknown_keys_and_bad_json() -> None:
    data = _good()
    del data["root"]
    with pytest.raises(ValidationFailed, match="missing") as info:
        BalanceProof.from_dict(data)
    assert info.value.context["missing"] == ["root"]
    with pytest.raises(ValidationFailed) as info:
        BalanceProof.from_dict(_good() | {"extra": 1})
    assert info.value.context["unexpected"] == ["extra"]
    with pytest.raises(ValidationFailed) as info:
        BalanceProof.from_json("{not json")
    assert info.value.context["field"] == "json"
    with pytest.raises(ValidationFailed):
        BalanceProof.from_json("[1, 2]")


# -- ledger balances ----------------------------------------------------------------------


def test_balances_for_root_keeps_only_non_zero_wallets() -> None:
    ledger_balances = {
        f"wallet:{ALICE}": 5 * DUCK,
        f"wallet:{BOB}": 0,
        f"stake:{ALICE}": 100 * DUCK,
        f"wallet:{CAROL}": 1,
        "escrow:job:job_1": 3 * DUCK,
        "escrow:rental:r1": DUCK,
        "treasury": 7,
        "mint": -200 * DUCK,
    }
    before = dict(ledger_balances)
    assert balances_for_root(ledger_balances) == {ALICE: 5 * DUCK, CAROL: 1}
    assert ledger_balances == before  # the caller's mapping is not touched
    tree = build_tree(balances_for_root(ledger_balances))
    assert tree.total == 5 * DUCK + 1


def test_balances_for_root_refuses_negative_wallets_and_case_duplicates() -> None:
    with pytest.raises(LedgerInvariantBroken):
        balances_for_root({f"wallet:{ALICE}": -1})
    with pytest.raises(ValidationFailed, match="twice"):
        balances_for_root({f"wallet:{ALICE}": 1, f"wallet:{ALICE.lower()}": 2})
    with pytest.raises(ValidationFailed):
        balances_for_root({"wallet:0x1234": 1})


def test_module_all_is_sorted_and_importable() -> None:
    from .test_ledger_exported import isort_key

    assert merkle.__all__ == sorted(merkle.__all__, key=isort_key)
    for name in merkle.__all__:
        assert hasattr(merkle, name)
