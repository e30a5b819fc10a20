# pragma version 0.4.3
"""
@title DuckToken
@notice The DUCK token: ERC-20 with 6 decimals and EIP-2612 permit.
@dev The deployer is the first minter; the minter may mint and hand the role on.
     Amounts are integers of micro-DUCK. EIP-712 domain: name "Duck", version "1",
     chainId, verifyingContract (recomputed on every call, so a chain fork is safe).
"""

from ethereum.ercs import IERC20
from ethereum.ercs import IERC20Detailed

implements: IERC20
implements: IERC20Detailed

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

event MinterChanged:
    old_minter: indexed(address)
    new_minter: indexed(address)

NAME: constant(String[4]) = "Duck"
SYMBOL: constant(String[4]) = "DUCK"
VERSION: constant(String[1]) = "1"
DECIMALS: constant(uint8) = 6

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
PERMIT_TYPEHASH: constant(bytes32) = keccak256(
    "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)
# secp256k1 order / 2: signatures with a larger s are the malleable twin (EIP-2).
SECP256K1N_HALF: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
totalSupply: public(uint256)
nonces: public(HashMap[address, uint256])
minter: public(address)


@deploy
def __init__():
    self.minter = msg.sender
    log MinterChanged(old_minter=empty(address), new_minter=msg.sender)


@external
@view
def name() -> String[4]:
    return NAME


@external
@view
def symbol() -> String[4]:
    return SYMBOL


@external
@view
def decimals() -> uint8:
    return DECIMALS


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "duck: transfer to zero address"
    assert self.balanceOf[sender] >= amount, "duck: insufficient balance"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@internal
def _approve(owner: address, spender: address, amount: uint256):
    assert spender != empty(address), "duck: approve to zero address"
    self.allowance[owner][spender] = amount
    log Approval(owner=owner, spender=spender, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self._approve(msg.sender, spender, amount)
    return True


@external
def transferFrom(owner: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[owner][msg.sender]
    # An allowance of max_value(uint256) is infinite and never spent (as in OpenZeppelin).
    if allowed != max_value(uint256):
        assert allowed >= amount, "duck: insufficient allowance"
        self.allowance[owner][msg.sender] = allowed - amount
    self._transfer(owner, receiver, amount)
    return True


@external
def mint(receiver: address, amount: uint256) -> bool:
    assert msg.sender == self.minter, "duck: caller is not the minter"
    assert receiver != empty(address), "duck: mint to zero address"
    self.totalSupply += amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)
    return True


@external
def set_minter(new_minter: address):
    assert msg.sender == self.minter, "duck: caller is not the minter"
    log MinterChanged(old_minter=self.minter, new_minter=new_minter)
    self.minter = new_minter


@internal
@view
def _domain_separator() -> bytes32:
    return keccak256(
        abi_encode(
            EIP712_DOMAIN_TYPEHASH,
            keccak256(NAME),
            keccak256(VERSION),
            chain.id,
            self,
        )
    )


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    return self._domain_separator()


@external
def permit(
    owner: address,
    spender: address,
    amount: uint256,
    deadline: uint256,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    assert owner != empty(address), "duck: permit for zero address"
    assert block.timestamp <= deadline, "duck: permit expired"
    assert convert(s, uint256) <= SECP256K1N_HALF, "duck: invalid signature"
    nonce: uint256 = self.nonces[owner]
    struct_hash: bytes32 = keccak256(
        abi_encode(PERMIT_TYPEHASH, owner, spender, amount, nonce, deadline)
    )
    digest: bytes32 = keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))
    signer: address = ecrecover(digest, v, r, s)
    assert signer == owner, "duck: invalid signature"
    self.nonces[owner] = nonce + 1
    self._approve(owner, spender, amount)
