"""compile_contract output deploys and runs through web3 on py-evm (EthereumTesterProvider)."""

from __future__ import annotations

import pytest
from eth_typing import ChecksumAddress
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from quackmesh.contracts import CONTRACT_NAMES, compile_contract, source

from .support import ESCAPE_PERIOD_S, ONE_DUCK


def test_source_and_compile_reject_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown contract"):
        source("Nope")
    with pytest.raises(ValueError, match="unknown contract"):
        compile_contract("../Vault")


def test_compile_is_cached_and_sources_are_pinned() -> None:
    for name in CONTRACT_NAMES:
        assert source(name).startswith("# pragma version 0.4.3\n")
        compiled = compile_contract(name)
        assert compiled is compile_contract(name)
        assert compiled.bytecode.startswith("0x")
        assert any(item.get("type") == "event" for item in compiled.abi)


def test_deploy_and_deposit_through_web3() -> None:
    w3 = Web3(EthereumTesterProvider())
    accounts: list[ChecksumAddress] = list(w3.eth.accounts)
    deployer, alice, signer = accounts[0], accounts[1], accounts[2]

    def deploy(name: str, *args: object) -> Contract:
        compiled = compile_contract(name)
        factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
        tx = factory.constructor(*args).transact({"from": deployer})
        receipt = w3.eth.wait_for_transaction_receipt(tx)
        assert receipt["status"] == 1
        address = receipt["contractAddress"]
        assert address is not None
        return w3.eth.contract(address=address, abi=compiled.abi)

    def send(call: ContractFunction, sender: ChecksumAddress) -> TxReceipt:
        receipt = w3.eth.wait_for_transaction_receipt(call.transact({"from": sender}))
        assert receipt["status"] == 1
        return receipt

    token = deploy("DuckToken")
    vault = deploy("Vault", token.address, deployer, signer, ESCAPE_PERIOD_S)
    assert token.functions.decimals().call() == 6

    send(token.functions.mint(alice, 10 * ONE_DUCK), deployer)
    send(token.functions.approve(vault.address, 4 * ONE_DUCK), alice)
    receipt = send(vault.functions.deposit(4 * ONE_DUCK), alice)
    # The receipt also holds the token's Transfer log: skip logs of other ABIs.
    (event,) = vault.events.Deposit().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["account"] == alice
    assert event["args"]["amount"] == 4 * ONE_DUCK
    assert event["args"]["deposit_id"] == 1
    assert token.functions.balanceOf(vault.address).call() == 4 * ONE_DUCK
    assert token.functions.balanceOf(alice).call() == 6 * ONE_DUCK


def test_exported_names_are_sorted_and_exist() -> None:
    import quackmesh.contracts as module

    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name)
