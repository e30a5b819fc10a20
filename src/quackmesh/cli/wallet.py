"""``quackmesh wallet new|show|balance|faucet``, and moving DUCK on and off chain:
``tokens|deposit|deposits|withdraw|withdrawals``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quackmesh.cli.chain import (
    connect_chain,
    contract,
    format_eth,
    short_hash,
    tx_hash_of,
    wait_for,
    when,
)
from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    default_wallet_path,
    die,
    err_console,
    handle_errors,
    load_wallet,
    parse_amount,
    print_json,
    read_password,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.core.chain_schemas import DepositPublic, VoucherPublic
from quackmesh.core.errors import ChainError
from quackmesh.core.money import format_duck
from quackmesh.core.wallet import Wallet
from quackmesh.ledger.chain import ChainClient
from quackmesh.sdk import Client

app = typer.Typer(
    help="Create and inspect wallets (encrypted Ethereum keystore files).", no_args_is_help=True
)

WalletOpt = Annotated[
    Path | None,
    typer.Option(
        "--wallet", "-w", help="keystore file \\[default: $QUACKMESH_HOME/wallets/default.json]"
    ),
]
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL \\[env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        help="send the transaction yourself through this JSON-RPC node (you pay the gas) "
        "instead of through the coordinator",
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait/--no-wait", help="wait until the coordinator has applied it"),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="seconds to --wait at most")]


@app.command()
@handle_errors
def new(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="where to write the keystore")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a new key and save it as an encrypted keystore (mode 0600)."""
    path = out or default_wallet_path()
    if path.exists():
        die(f"{path} already exists; refusing to overwrite a wallet (use --out)", ExitCode.WALLET)
    wallet = Wallet.create()
    wallet.save(path, read_password(confirm=True))
    if json_out:
        print_json({"address": wallet.address, "path": str(path)})
    else:
        console.print(f"created wallet [bold]{wallet.address}[/] in {path}")


@app.command()
@handle_errors
def show(wallet: WalletOpt = None, json_out: JsonOpt = False) -> None:
    """Show a wallet's address (read from the keystore; no password needed)."""
    path = wallet or default_wallet_path()
    if not path.exists():
        die(f"no wallet at {path}; create one with `quackmesh wallet new`", ExitCode.WALLET)
    try:
        address = "0x" + str(json.loads(path.read_text())["address"]).removeprefix("0x")
    except (ValueError, KeyError) as exc:
        die(f"{path} is not a keystore file: {exc}", ExitCode.WALLET)
    if json_out:
        print_json({"address": address, "path": str(path)})
    else:
        console.print(f"{address}  ({path})", highlight=False)


@app.command()
@handle_errors
def balance(
    wallet: WalletOpt = None, coordinator: CoordOpt = DEFAULT_COORDINATOR, json_out: JsonOpt = False
) -> None:
    """Show the wallet's DUCK balance on the coordinator's ledger."""
    with Client(coordinator, load_wallet(wallet)) as client:
        bal = client.balance()
    if json_out:
        print_json(bal.model_dump())
    else:
        console.print(
            f"{bal.address}: {format_duck(bal.available)} available, {format_duck(bal.in_escrow)} in escrow"
        )


@app.command()
@handle_errors
def faucet(
    amount: Annotated[str, typer.Argument(help="DUCK to mint, e.g. 100 or 0.5")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
) -> None:
    """Mint development DUCK (only on a coordinator in development mode)."""
    with Client(coordinator, load_wallet(wallet)) as client:
        bal = client.faucet(parse_amount(amount, "amount"))
    console.print(f"{bal.address}: {format_duck(bal.available)} available")


# --- on chain (coordinators that settle on a chain) ----------------------------------------


def _positive_amount(text: str) -> int:
    micro = parse_amount(text, "amount")
    if micro <= 0:
        die("amount must be more than 0", ExitCode.USAGE)
    return micro


def _enough_tokens(held: int, amount: int, address: str) -> None:
    if held < amount:
        die(
            f"{address} holds {format_duck(held)} tokens on chain, less than "
            f"{format_duck(amount)}; on a development coordinator get some with "
            f"`quackmesh wallet tokens {format_duck(amount, symbol=False)}`",
            ExitCode.INSUFFICIENT_BALANCE,
        )


def _enough_gas(chain: ChainClient) -> None:
    if int(chain.w3.eth.get_balance(chain.address)) == 0:
        die(
            f"{chain.address} has no ETH on chain {chain.chain_id} to pay gas; "
            "leave out --rpc to go through the coordinator (gasless)",
            ExitCode.INSUFFICIENT_BALANCE,
        )


def _progress(client: Client) -> Callable[[], str]:
    def line() -> str:
        try:
            info = client.chain_info()
        except Exception:  # progress is cosmetic; the wait itself reports failures
            return ""
        return f"coordinator applied block {info.scanned_block} of {info.head_block}"

    return line


def _credited(client: Client, tx_hash: str) -> Callable[[], DepositPublic | None]:
    def check() -> DepositPublic | None:
        return next((d for d in client.deposits() if d.tx_hash.lower() == tx_hash.lower()), None)

    return check


def _settled(client: Client, voucher_id: int) -> Callable[[], VoucherPublic | None]:
    def check() -> VoucherPublic | None:
        mine = (v for v in client.withdrawals() if v.id == voucher_id)
        return next((v for v in mine if v.state != "pending"), None)

    return check


@app.command()
@handle_errors
def tokens(
    amount: Annotated[str, typer.Argument(help="DUCK tokens to mint on chain, e.g. 100")],
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Mint development DUCK *tokens* (and a little ETH for gas) to the wallet's chain
    address; `quackmesh wallet deposit` then moves them into the coordinator's ledger."""
    micro = _positive_amount(amount)
    with Client(coordinator, load_wallet(wallet)) as client:
        relay = client.token_faucet(micro)
        account = client.chain_account()
    if json_out:
        print_json({"tx_hash": relay.tx_hash, "account": account.model_dump(mode="json")})
        return
    console.print(
        f"minted {format_duck(micro)} tokens to {account.address} (tx {relay.tx_hash}); "
        f"on chain it holds {format_duck(account.token_balance)} and "
        f"{format_eth(account.native_balance)} for gas",
        highlight=False,
    )


@app.command()
@handle_errors
def deposit(
    amount: Annotated[str, typer.Argument(help="DUCK tokens to deposit, e.g. 25 or 0.5")],
    rpc: RpcOpt = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 180.0,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Move DUCK tokens from the wallet's chain address into the Vault, to spend them here.

    Gasless by default: the wallet signs an EIP-2612 permit and the coordinator submits
    it. With --rpc the wallet's own key approves and deposits (and pays the gas)."""
    micro = _positive_amount(amount)
    me = load_wallet(wallet)
    with Client(coordinator, me) as client:
        info = client.chain_info()
        if rpc is None:
            _enough_tokens(client.chain_account().token_balance, micro, me.address)
            tx_hash = client.deposit(micro).tx_hash
        else:
            chain = connect_chain(rpc, me.private_key, expect_chain_id=info.chain_id)
            token = contract(chain, "DuckToken", info.token)
            vault = contract(chain, "Vault", info.vault)
            _enough_tokens(
                int(chain.call(token.functions.balanceOf(me.address))), micro, me.address
            )
            _enough_gas(chain)
            if int(chain.call(token.functions.allowance(me.address, vault.address))) < micro:
                chain.transact(token.functions.approve(vault.address, micro))
            tx_hash = tx_hash_of(chain.transact(vault.functions.deposit(micro)))
        if not json_out:
            console.print(f"deposited {format_duck(micro)} on chain: tx {tx_hash}", highlight=False)
        credited: DepositPublic | None = None
        if wait:
            credited = wait_for(
                _credited(client, tx_hash),
                what=f"the coordinator to credit the deposit ({info.confirmations} confirmations)",
                timeout=timeout,
                progress=_progress(client),
            )
            if credited is None:
                die(
                    f"deposit {tx_hash} is on chain but not credited after {timeout:g}s; "
                    "it will be once confirmed: see `quackmesh wallet deposits`",
                    ExitCode.TIMEOUT,
                )
        bal = client.balance()
    if json_out:
        print_json(
            {
                "tx_hash": tx_hash,
                "amount": micro,
                "deposit": credited.model_dump(mode="json") if credited else None,
                "balance": bal.model_dump(),
            }
        )
    elif credited is not None:
        console.print(
            f"credited as deposit #{credited.deposit_id}; {bal.address}: "
            f"{format_duck(bal.available)} available",
            highlight=False,
        )


@app.command()
@handle_errors
def withdraw(
    amount: Annotated[str, typer.Argument(help="DUCK to take out to the chain, e.g. 10")],
    rpc: RpcOpt = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 180.0,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Take DUCK out of the ledger as tokens at the wallet's chain address.

    The coordinator signs a voucher the Vault pays once. By default it also submits it
    (gasless); with --rpc the wallet's own key submits it (and pays the gas)."""
    micro = _positive_amount(amount)
    me = load_wallet(wallet)
    with Client(coordinator, me) as client:
        if rpc is None:
            voucher = client.withdraw(micro, relay=True)
            tx_hash = voucher.tx_hash
        else:
            info = client.chain_info()
            chain = connect_chain(rpc, me.private_key, expect_chain_id=info.chain_id)
            _enough_gas(chain)  # before the voucher takes the DUCK out of the wallet
            vault = contract(chain, "Vault", info.vault)
            voucher = client.withdraw(micro, relay=False)
            call = vault.functions.withdraw(
                voucher.amount,
                voucher.nonce,
                voucher.expiry,
                voucher.v,
                bytes.fromhex(voucher.r[2:]),
                bytes.fromhex(voucher.s[2:]),
            )
            try:
                tx_hash = tx_hash_of(chain.transact(call))
            except ChainError as exc:
                die(
                    f"voucher {voucher.id} is signed but submitting it failed: {exc.detail}; "
                    f"retry with the fields in `quackmesh wallet withdrawals --json`, or its "
                    f"{format_duck(voucher.amount)} return to the wallet after it expires "
                    f"({when(voucher.expiry)})",
                    ExitCode.REJECTED,
                )
        if not json_out:
            console.print(
                f"voucher {voucher.id} for {format_duck(micro)} submitted: tx {tx_hash}",
                highlight=False,
            )
        if wait and voucher.state == "pending":
            settled = wait_for(
                _settled(client, voucher.id),
                what=f"the coordinator to see voucher {voucher.id} paid",
                timeout=timeout,
                progress=_progress(client),
            )
            if settled is None:
                die(
                    f"voucher {voucher.id} (tx {tx_hash}) is not marked paid after "
                    f"{timeout:g}s; see `quackmesh wallet withdrawals`",
                    ExitCode.TIMEOUT,
                )
            voucher = settled
        if voucher.state == "expired":
            die(
                f"voucher {voucher.id} expired unpaid; its DUCK went back to the wallet",
                ExitCode.REJECTED,
            )
        bal = client.balance()
        held = client.chain_account().token_balance
    if json_out:
        print_json(
            {
                "voucher": voucher.model_dump(mode="json"),
                "tx_hash": tx_hash,
                "balance": bal.model_dump(),
                "token_balance": held,
            }
        )
        return
    console.print(
        f"voucher {voucher.id} {voucher.state}; {bal.address}: {format_duck(bal.available)} "
        f"available here, {format_duck(held)} tokens on chain",
        highlight=False,
    )


@app.command()
@handle_errors
def deposits(
    wallet: WalletOpt = None, coordinator: CoordOpt = DEFAULT_COORDINATOR, json_out: JsonOpt = False
) -> None:
    """The wallet's credited Vault deposits, newest first."""
    with Client(coordinator, load_wallet(wallet)) as client:
        rows = client.deposits()
    if json_out:
        print_json([d.model_dump(mode="json") for d in rows])
        return
    if not rows:
        err_console.print("no deposits yet; see `quackmesh wallet deposit --help`")
        return
    table = Table("#", "amount", "block", "tx", "credited")
    for d in rows:
        table.add_row(
            str(d.deposit_id),
            format_duck(d.amount),
            str(d.block),
            short_hash(d.tx_hash),
            when(d.credited_at),
        )
    console.print(table)


@app.command()
@handle_errors
def withdrawals(
    wallet: WalletOpt = None, coordinator: CoordOpt = DEFAULT_COORDINATOR, json_out: JsonOpt = False
) -> None:
    """The wallet's withdrawal vouchers, newest first (pending, paid or expired)."""
    with Client(coordinator, load_wallet(wallet)) as client:
        rows = client.withdrawals()
    if json_out:
        print_json([v.model_dump(mode="json") for v in rows])
        return
    if not rows:
        err_console.print("no withdrawals yet; see `quackmesh wallet withdraw --help`")
        return
    table = Table("voucher", "amount", "state", "expires", "tx")
    for v in rows:
        table.add_row(
            str(v.id), format_duck(v.amount), v.state, when(v.expiry), short_hash(v.tx_hash)
        )
    console.print(table)
