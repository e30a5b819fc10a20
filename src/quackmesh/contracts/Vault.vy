# pragma version 0.4.3
"""
@title Vault
@notice Holds the DUCK that backs QuackMesh's off-chain ledger.
@dev * deposit / deposit_for: pulls DUCK from the caller and logs Deposit with a strictly increasing deposit_id; the
       coordinator credits wallet:<account> once per deposit_id after N confirmations.
     * withdraw: pays msg.sender (withdraw_for: the named account, relayed by anyone)
       against an EIP-712 voucher signed by `signer`:
       Withdrawal(address account,uint256 amount,uint256 nonce,uint256 expiry), domain
       name "QuackMesh Vault", version "1", chainId, verifyingContract. Each
       (account, nonce) pays once; the voucher is void after `expiry` (unix seconds).
     * post_root: the operator commits, each epoch, the Merkle root of all off-chain
       balances, the ledger journal head hash and the sum of the balances, which must not
       exceed the DUCK the vault holds.
       Leaf: keccak256(keccak256(abi.encode(address account, uint256 balance))).
       Node: keccak256(min(a, b) ++ max(a, b)) (sorted pair, OpenZeppelin style).
     * record_jobs / record_slashes: the job life cycle mirrored as events, in batches
       (one event per element, so indexers need no array decoding).
     * Escape hatch: when no root was posted for `escape_period` seconds, vouchers stop
       working and a holder withdraws by proving a balance against the last root:
       paid = balance + deposited since that root - withdrawn since that root.
"""

from ethereum.ercs import IERC20


event Deposit:
    account: indexed(address)
    amount: uint256
    deposit_id: uint256

event Withdrawal:
    account: indexed(address)
    amount: uint256
    nonce: uint256

event EscapeWithdrawal:
    account: indexed(address)
    amount: uint256
    epoch: uint256

event RootPosted:
    epoch: indexed(uint256)
    root: bytes32
    journal_head: bytes32
    total: uint256

event JobPosted:
    epoch: indexed(uint256)
    job_id: bytes32

event JobFinalized:
    epoch: indexed(uint256)
    job_id: bytes32

event ProviderSlashed:
    epoch: indexed(uint256)
    provider: indexed(address)
    amount: uint256

event OperatorChanged:
    old_operator: indexed(address)
    new_operator: indexed(address)

event SignerChanged:
    old_signer: indexed(address)
    new_signer: indexed(address)


struct EpochRoot:
    root: bytes32
    journal_head: bytes32
    total: uint256
    posted_at: uint256


MAX_BATCH: constant(uint256) = 256
MAX_PROOF: constant(uint256) = 32

EIP712_DOMAIN_TYPEHASH: constant(bytes32) = keccak256(
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
WITHDRAWAL_TYPEHASH: constant(bytes32) = keccak256(
    "Withdrawal(address account,uint256 amount,uint256 nonce,uint256 expiry)"
)
DOMAIN_NAME: constant(String[15]) = "QuackMesh Vault"
DOMAIN_VERSION: constant(String[1]) = "1"
# secp256k1 order / 2: signatures with a larger s are the malleable twin (EIP-2).
SECP256K1N_HALF: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168

token: public(IERC20)
operator: public(address)
signer: public(address)
escape_period: public(uint256)

deposit_count: public(uint256)
used_nonce: public(HashMap[address, HashMap[uint256, bool]])

last_epoch: public(uint256)
last_root_at: public(uint256)
roots: public(HashMap[uint256, EpochRoot])

# Movements per account made while `last_epoch` was the given epoch, i.e. after that
# epoch's root was posted (and so not reflected in it): the escape hatch corrects by them.
deposited_since: public(HashMap[address, HashMap[uint256, uint256]])
withdrawn_since: public(HashMap[address, HashMap[uint256, uint256]])


@deploy
def __init__(token: IERC20, operator: address, signer: address, escape_period: uint256):
    assert token.address != empty(address), "vault: token is zero address"
    assert operator != empty(address), "vault: operator is zero address"
    assert signer != empty(address), "vault: signer is zero address"
    assert escape_period > 0, "vault: escape period is zero"
    self.token = token
    self.operator = operator
    self.signer = signer
    self.escape_period = escape_period
    # The escape clock starts at deployment: an operator that never posts is late too.
    self.last_root_at = block.timestamp
    log OperatorChanged(old_operator=empty(address), new_operator=operator)
    log SignerChanged(old_signer=empty(address), new_signer=signer)


# --- views -----------------------------------------------------------------------------


@internal
@view
def _escape_mode() -> bool:
    return block.timestamp > self.last_root_at + self.escape_period


@external
@view
def escape_mode() -> bool:
    return self._escape_mode()


@internal
@view
def _domain_separator() -> bytes32:
    return keccak256(
        abi_encode(
            EIP712_DOMAIN_TYPEHASH,
            keccak256(DOMAIN_NAME),
            keccak256(DOMAIN_VERSION),
            chain.id,
            self,
        )
    )


@external
@view
def DOMAIN_SEPARATOR() -> bytes32:
    return self._domain_separator()


@internal
@view
def _voucher_digest(account: address, amount: uint256, nonce: uint256, expiry: uint256) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(WITHDRAWAL_TYPEHASH, account, amount, nonce, expiry)
    )
    return keccak256(concat(b"\x19\x01", self._domain_separator(), struct_hash))


@external
@view
def voucher_digest(account: address, amount: uint256, nonce: uint256, expiry: uint256) -> bytes32:
    return self._voucher_digest(account, amount, nonce, expiry)


@internal
@pure
def _leaf(account: address, balance: uint256) -> bytes32:
    return keccak256(keccak256(abi_encode(account, balance)))


@internal
@pure
def _verify(
    account: address, balance: uint256, proof: DynArray[bytes32, MAX_PROOF], root: bytes32
) -> bool:
    node: bytes32 = self._leaf(account, balance)
    for sibling: bytes32 in proof:
        if convert(node, uint256) < convert(sibling, uint256):
            node = keccak256(concat(node, sibling))
        else:
            node = keccak256(concat(sibling, node))
    return node == root


@external
@pure
def leaf(account: address, balance: uint256) -> bytes32:
    return self._leaf(account, balance)


@external
@pure
def verify_balance(
    account: address, balance: uint256, proof: DynArray[bytes32, MAX_PROOF], root: bytes32
) -> bool:
    return self._verify(account, balance, proof, root)


# --- money in and out --------------------------------------------------------------------


@internal
def _deposit(payer: address, account: address, amount: uint256):
    assert amount > 0, "vault: zero deposit"
    assert account != empty(address), "vault: account is zero address"
    deposit_id: uint256 = self.deposit_count + 1
    self.deposit_count = deposit_id
    self.deposited_since[account][self.last_epoch] += amount
    log Deposit(account=account, amount=amount, deposit_id=deposit_id)
    assert extcall self.token.transferFrom(payer, self, amount), "vault: transfer failed"


@external
@nonreentrant
def deposit(amount: uint256):
    self._deposit(msg.sender, msg.sender, amount)


@external
@nonreentrant
def deposit_for(account: address, amount: uint256):
    """@notice Pay `amount` from the caller to credit `account` (the Deposit event names
    `account`): how the development faucet backs the DUCK it hands out in chain mode."""
    self._deposit(msg.sender, account, amount)


@internal
def _permit(owner: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32):
    # Anyone can copy the permit out of the mempool and submit it first; the permit then
    # fails here but the allowance is already in place. So a failed permit is ignored and
    # transferFrom decides (it reverts without allowance), as OpenZeppelin advises.
    permitted: bool = raw_call(
        self.token.address,
        abi_encode(
            owner,
            self,
            amount,
            deadline,
            v,
            r,
            s,
            method_id=method_id("permit(address,address,uint256,uint256,uint8,bytes32,bytes32)"),
        ),
        revert_on_failure=False,
    )


@external
@nonreentrant
def deposit_with_permit(amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32):
    self._permit(msg.sender, amount, deadline, v, r, s)
    self._deposit(msg.sender, msg.sender, amount)


@external
@nonreentrant
def deposit_with_permit_for(
    owner: address, amount: uint256, deadline: uint256, v: uint8, r: bytes32, s: bytes32
):
    """@notice Gasless deposit: anyone (the coordinator) submits `owner`'s EIP-2612 permit;
    the DUCK comes from `owner` and is credited to `owner`, so a relayer gains nothing."""
    self._permit(owner, amount, deadline, v, r, s)
    self._deposit(owner, owner, amount)


@internal
def _withdraw(
    account: address, amount: uint256, nonce: uint256, expiry: uint256, v: uint8, r: bytes32, s: bytes32
):
    assert not self._escape_mode(), "vault: escape mode, vouchers are void"
    assert amount > 0, "vault: zero withdrawal"
    assert block.timestamp <= expiry, "vault: voucher expired"
    assert not self.used_nonce[account][nonce], "vault: voucher already used"
    assert convert(s, uint256) <= SECP256K1N_HALF, "vault: bad voucher signature"
    digest: bytes32 = self._voucher_digest(account, amount, nonce, expiry)
    recovered: address = ecrecover(digest, v, r, s)
    assert recovered != empty(address), "vault: bad voucher signature"
    assert recovered == self.signer, "vault: bad voucher signature"
    self.used_nonce[account][nonce] = True
    self.withdrawn_since[account][self.last_epoch] += amount
    log Withdrawal(account=account, amount=amount, nonce=nonce)
    assert extcall self.token.transfer(account, amount), "vault: transfer failed"


@external
@nonreentrant
def withdraw(amount: uint256, nonce: uint256, expiry: uint256, v: uint8, r: bytes32, s: bytes32):
    self._withdraw(msg.sender, amount, nonce, expiry, v, r, s)


@external
@nonreentrant
def withdraw_for(
    account: address, amount: uint256, nonce: uint256, expiry: uint256, v: uint8, r: bytes32, s: bytes32
):
    """@notice Gasless withdrawal: anyone submits `account`'s voucher; the DUCK always goes
    to `account`, the address the voucher was signed for."""
    self._withdraw(account, amount, nonce, expiry, v, r, s)


@external
@view
def escape_claimable(account: address, balance: uint256) -> uint256:
    """@notice What escape_withdraw would pay for an already proven `balance`."""
    epoch: uint256 = self.last_epoch
    credit: uint256 = balance + self.deposited_since[account][epoch]
    debit: uint256 = self.withdrawn_since[account][epoch]
    if credit <= debit:
        return 0
    return credit - debit


@external
@nonreentrant
def escape_withdraw(balance: uint256, proof: DynArray[bytes32, MAX_PROOF]):
    assert self._escape_mode(), "vault: not in escape mode"
    epoch: uint256 = self.last_epoch
    assert epoch > 0, "vault: no root posted"
    assert self._verify(msg.sender, balance, proof, self.roots[epoch].root), "vault: bad balance proof"
    credit: uint256 = balance + self.deposited_since[msg.sender][epoch]
    debit: uint256 = self.withdrawn_since[msg.sender][epoch]
    assert credit > debit, "vault: nothing to withdraw"
    amount: uint256 = credit - debit
    self.withdrawn_since[msg.sender][epoch] = debit + amount
    log EscapeWithdrawal(account=msg.sender, amount=amount, epoch=epoch)
    assert extcall self.token.transfer(msg.sender, amount), "vault: transfer failed"


# --- operator ----------------------------------------------------------------------------


@internal
@view
def _only_operator():
    assert msg.sender == self.operator, "vault: caller is not the operator"


@external
def post_root(epoch: uint256, root: bytes32, journal_head: bytes32, total: uint256):
    self._only_operator()
    assert epoch > self.last_epoch, "vault: epoch not increasing"
    assert total <= staticcall self.token.balanceOf(self), "vault: root total exceeds vault balance"
    self.roots[epoch] = EpochRoot(
        root=root, journal_head=journal_head, total=total, posted_at=block.timestamp
    )
    self.last_epoch = epoch
    self.last_root_at = block.timestamp
    log RootPosted(epoch=epoch, root=root, journal_head=journal_head, total=total)


@external
def record_jobs(
    epoch: uint256,
    posted: DynArray[bytes32, MAX_BATCH],
    finalized: DynArray[bytes32, MAX_BATCH],
):
    self._only_operator()
    for job_id: bytes32 in posted:
        log JobPosted(epoch=epoch, job_id=job_id)
    for job_id: bytes32 in finalized:
        log JobFinalized(epoch=epoch, job_id=job_id)


@external
def record_slashes(
    epoch: uint256,
    providers: DynArray[address, MAX_BATCH],
    amounts: DynArray[uint256, MAX_BATCH],
):
    self._only_operator()
    assert len(providers) == len(amounts), "vault: providers and amounts differ in length"
    for i: uint256 in range(len(providers), bound=MAX_BATCH):
        log ProviderSlashed(epoch=epoch, provider=providers[i], amount=amounts[i])


@external
def set_operator(new_operator: address):
    self._only_operator()
    assert new_operator != empty(address), "vault: operator is zero address"
    log OperatorChanged(old_operator=self.operator, new_operator=new_operator)
    self.operator = new_operator


@external
def set_signer(new_signer: address):
    self._only_operator()
    assert new_signer != empty(address), "vault: signer is zero address"
    log SignerChanged(old_signer=self.signer, new_signer=new_signer)
    self.signer = new_signer
