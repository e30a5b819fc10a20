"""ChainClient contract tests on both backends: the in-process EVM and a real anvil node."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account

from quackmesh.core.errors import ChainError, ChainReverted
from quackmesh.ledger.chain import ChainClient, Compiled, revert_reason

pytestmark = pytest.mark.slow

COUNTER = """
# pragma version 0.4.3
event Bumped:
    by: indexed(address)
    amount: uint256

count: public(uint256)

@external
def bump(amount: uint256):
    assert amount > 0, "counter: zero"
    self.count += amount
    log Bumped(by=msg.sender, amount=amount)
"""
# anvil's first pre-funded development account (public, well known).
ANVIL_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")


@pytest.fixture(scope="module")
def counter() -> Compiled:
    import vyper

    out = vyper.compile_code(COUNTER, output_formats=["abi", "bytecode"])
    return Compiled(abi=out["abi"], bytecode=out["bytecode"])


@pytest.fixture(params=["local", "anvil"])
def client(request: pytest.FixtureRequest) -> Iterator[ChainClient]:
    if request.param == "local":
        yield ChainClient.local()
        return
    w3 = request.getfixturevalue("w3")  # fresh anvil state (evm_snapshot / evm_revert)
    yield ChainClient(w3, ANVIL_KEY)


def test_deploy_transact_call_and_read_logs(client: ChainClient, counter: Compiled) -> None:
    contract = client.deploy(counter)
    start = client.w3.eth.block_number
    receipt = client.transact(contract.functions.bump(5))
    assert receipt["status"] == 1
    assert client.call(contract.functions.count()) == 5
    logs = client.logs(contract.events.Bumped, from_block=start, to_block=client.safe_head())
    assert [(log["args"]["by"], log["args"]["amount"]) for log in logs] == [(client.address, 5)]


def test_a_revert_is_an_error_with_the_contracts_reason(
    client: ChainClient, counter: Compiled
) -> None:
    contract = client.deploy(counter)
    with pytest.raises(ChainReverted) as refused:
        client.transact(contract.functions.bump(0))  # caught while estimating gas
    assert refused.value.detail == "counter: zero"
    # With the gas given there is no estimate: the revert shows in the mined receipt.
    with pytest.raises(ChainReverted) as mined:
        client.transact(contract.functions.bump(0), gas=200_000)
    assert "counter: zero" in mined.value.detail or "status 0" in mined.value.detail
    assert client.call(contract.functions.count()) == 0
    # The nonce moved on past the failed transaction: the next one goes through.
    assert client.transact(contract.functions.bump(1))["status"] == 1


def test_concurrent_transactions_get_distinct_nonces(
    client: ChainClient, counter: Compiled
) -> None:
    contract = client.deploy(counter)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            client.transact(contract.functions.bump(1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and client.call(contract.functions.count()) == 6


def test_a_nonce_used_elsewhere_is_re_read(client: ChainClient, counter: Compiled) -> None:
    contract = client.deploy(counter)
    other = ChainClient(client.w3, bytes(client._account.key))  # the same key, elsewhere
    other.transact(contract.functions.bump(2))  # our cached nonce is now stale
    assert client.transact(contract.functions.bump(3))["status"] == 1
    assert client.call(contract.functions.count()) == 5


def test_confirmations_wait_for_blocks_on_top(w3: Any, counter: Compiled) -> None:
    client = ChainClient(w3, ANVIL_KEY, confirmations=2, timeout_s=20)
    factory_client = ChainClient(w3, ANVIL_KEY)
    contract = factory_client.deploy(counter)
    stop = threading.Event()

    def mine() -> None:  # anvil mines per transaction; a real chain keeps producing blocks
        while not stop.wait(0.2):
            w3.provider.make_request("evm_mine", [])

    miner = threading.Thread(target=mine, daemon=True)
    miner.start()
    try:
        receipt = client.transact(contract.functions.bump(1))
    finally:
        stop.set()
        miner.join(timeout=5)
    assert w3.eth.block_number >= receipt["blockNumber"] + 2
    assert client.safe_head() <= w3.eth.block_number - 2


def test_unreachable_node_is_a_chain_error() -> None:
    with pytest.raises(ChainError):
        ChainClient.connect("http://127.0.0.1:9", bytes(Account.create().key))


def test_revert_reason_reads_both_styles() -> None:
    from eth_tester.exceptions import TransactionFailed
    from web3.exceptions import ContractLogicError

    assert revert_reason(ContractLogicError("execution reverted: vault: expired")) == (
        "vault: expired"
    )
    encoded = bytes.fromhex("08c379a0") + (32).to_bytes(32, "big") + (3).to_bytes(32, "big")
    assert revert_reason(TransactionFailed(encoded + b"abc".ljust(32, b"\0"))) == "abc"
    assert revert_reason(TransactionFailed("")) == "reverted without a reason"


def test_an_rpc_url_is_shown_without_its_path_or_query() -> None:
    from quackmesh.ledger.chain import redact_url

    assert redact_url("https://eth.example.com/v3/SECRETKEY?x=1") == "https://eth.example.com"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    with pytest.raises(ChainError) as caught:
        ChainClient.connect("http://127.0.0.1:9/secret-key", bytes(32 * [1]))
    assert "secret-key" not in str(caught.value)
