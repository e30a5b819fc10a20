"""``quackmesh chain deploy|info``, and the chain plumbing the wallet and ledger commands share.

Two ways to reach the chain from the command line:

* through the coordinator (the default): gasless permits and relayed vouchers, and the
  coordinator's own reading of ``Vault.roots`` (which trusts it);
* straight to a JSON-RPC node (``--rpc URL``): the wallet's key pays its own gas, and
  :class:`VaultReader` reads the Vault with no key and no coordinator in between, which is
  what makes ``quackmesh ledger check-proof --rpc`` trustless.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    err_console,
    handle_errors,
    print_json,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.contracts import ContractName, compile_contract
from quackmesh.coordinator.settings import Settings
from quackmesh.core.chain_schemas import ChainInfoPublic
from quackmesh.core.errors import ChainError
from quackmesh.core.ids import normalize_address
from quackmesh.core.money import format_duck
from quackmesh.core.wallet import Wallet, WalletError
from quackmesh.ledger.chain import ChainClient
from quackmesh.ledger.deployment import DEFAULT_ESCAPE_PERIOD_S, deploy_contracts
from quackmesh.sdk import Client

__all__ = [
    "KEY_PASSWORD_ENV",
    "VaultReader",
    "app",
    "connect_chain",
    "contract",
    "format_eth",
    "short_hash",
    "tx_hash_of",
    "wait_for",
    "when",
]

T = TypeVar("T")

KEY_PASSWORD_ENV = "QUACKMESH_CHAIN_KEY_PASSWORD"

app = typer.Typer(
    help="Deploy the DUCK token and Vault, and see what a coordinator settles against.",
    no_args_is_help=True,
)

CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL \\[env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


# --- shared helpers -----------------------------------------------------------------------


def when(at: float | None) -> str:
    return "-" if not at else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def short_hash(value: str | None) -> str:
    return "-" if not value else f"{value[:10]}…{value[-6:]}"


def format_eth(wei: int) -> str:
    """Wei as ETH with at most six decimals: 10**17 -> '0.1 ETH'."""
    whole, frac = divmod(wei, 10**18)
    text = f"{whole}.{frac // 10**12:06d}".rstrip("0").rstrip(".")
    return f"{text} ETH"


def tx_hash_of(receipt: Any) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


def contract(chain: ChainClient, name: ContractName, address: str) -> Any:
    """The web3 contract ``name`` at ``address`` (compiled on first use)."""
    return chain.at(compile_contract(name), address)


def connect_chain(url: str, key: bytes, *, expect_chain_id: int | None = None) -> ChainClient:
    """A chain client on ``url`` for ``key``; one clear line when the node is unreachable
    or is not the chain the coordinator settles on."""
    if not url.startswith(("http://", "https://")):
        die(f"--rpc must be an http(s) JSON-RPC URL, not {url!r}", ExitCode.USAGE)
    try:
        chain = ChainClient.connect(url, key)
    except ChainError as exc:
        die(exc.detail, ExitCode.UNREACHABLE)
    if expect_chain_id is not None and chain.chain_id != expect_chain_id:
        die(
            f"the node at {url} is chain {chain.chain_id}, but the coordinator settles "
            f"on chain {expect_chain_id}",
            ExitCode.USAGE,
        )
    return chain


def wait_for(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    progress: Callable[[], str] | None = None,
    poll_s: float = 0.5,
) -> T | None:
    """Poll ``check`` until it returns something, for at most ``timeout`` seconds.

    A line on stderr says what is awaited; in a terminal a spinner shows ``progress()``
    and the elapsed time, elsewhere the progress is printed every ten seconds. Returns
    ``None`` on timeout (the caller says what that means).
    """
    start = time.monotonic()
    deadline = start + timeout
    found = check()
    if found is not None:
        return found
    err_console.print(f"waiting for {what} (up to {timeout:g}s)…", highlight=False)
    live = err_console.is_terminal
    last_line = start
    status = err_console.status(what) if live else None
    if status is not None:
        status.start()
    try:
        while time.monotonic() < deadline:
            time.sleep(poll_s)
            found = check()
            if found is not None:
                return found
            now = time.monotonic()
            detail = progress() if progress is not None else ""
            line = f"{what}: {detail + ', ' if detail else ''}{now - start:.0f}s"
            if status is not None:
                status.update(line)
            elif now - last_line >= 10:
                err_console.print(line, highlight=False)
                last_line = now
    finally:
        if status is not None:
            status.stop()
    return None


@dataclass(frozen=True)
class VaultReader:
    """Read-only access to a Vault over JSON-RPC: no key, no coordinator."""

    url: str
    chain_id: int
    vault: Any  # a web3 contract

    @classmethod
    def open(cls, url: str, address: str) -> VaultReader:
        """``ChainError`` when the node at ``url`` cannot be reached."""
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
        try:
            chain_id = int(w3.eth.chain_id)
        except Exception as exc:
            raise ChainError(f"cannot reach the chain at {url}: {exc}") from exc
        abi = compile_contract("Vault").abi
        vault = w3.eth.contract(address=w3.to_checksum_address(address), abi=abi)
        return cls(url=url, chain_id=chain_id, vault=vault)

    def deployed(self) -> bool:
        """Whether there is any contract code at the Vault's address."""
        return bool(bytes(self.vault.w3.eth.get_code(self.vault.address)))

    @property
    def address(self) -> str:
        return str(self.vault.address)

    def root(self, epoch: int) -> tuple[bytes, int]:
        """``(root, posted_at)`` of ``Vault.roots(epoch)``; ``posted_at`` 0: not posted."""
        try:
            got = self.vault.functions.roots(epoch).call()
        except Exception as exc:
            raise ChainError(f"cannot read Vault.roots({epoch}) at {self.address}: {exc}") from exc
        return bytes(got[0]), int(got[3])

    def verify_balance(self, account: str, balance: int, proof: list[bytes], root: bytes) -> bool:
        """The Vault's own ``verify_balance`` (the check a contract would make)."""
        try:
            fn = self.vault.functions.verify_balance(account, balance, proof, root)
            return bool(fn.call())
        except Exception as exc:
            raise ChainError(f"Vault.verify_balance failed at {self.address}: {exc}") from exc


# --- deploy --------------------------------------------------------------------------------


def _key_password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            return password_file.read_text().strip()
        except OSError as exc:
            die(f"cannot read --password-file: {exc}", ExitCode.WALLET)
    password = os.environ.get(KEY_PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        die(
            f"no keystore password: pass --password-file or set {KEY_PASSWORD_ENV}",
            ExitCode.WALLET,
        )
    value: str = typer.prompt("Keystore password", hide_input=True)
    return value


@app.command()
@handle_errors
def deploy(
    rpc: Annotated[str, typer.Option("--rpc", help="the chain's JSON-RPC URL")],
    key_file: Annotated[
        Path,
        typer.Option(
            "--key-file",
            help="keystore of the operator key: deploys, mints, posts roots, signs vouchers",
            exists=True,
            dir_okay=False,
        ),
    ],
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file", help=f"file holding the keystore password \\[env {KEY_PASSWORD_ENV}]"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="where to record the deployment \\[default: QUACKMESH_CHAIN_DEPLOYMENT "
            "or $QUACKMESH_HOME/chain.json]",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing record")] = False,
    escape_period: Annotated[
        int,
        typer.Option(
            "--escape-period",
            min=1,
            help="seconds without a new root before holders may escape with their proofs",
        ),
    ] = DEFAULT_ESCAPE_PERIOD_S,
    signer: Annotated[
        str | None,
        typer.Option("--signer", help="voucher signer address \\[default: the operator key]"),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Deploy DuckToken and the Vault from the operator key and record where they live."""
    path = out or Settings().resolved_chain_deployment()
    if path.exists() and not force:
        die(f"{path} already exists; pass --force to replace the record", ExitCode.USAGE)
    if signer is not None:
        try:
            signer = normalize_address(signer)
        except ValueError as exc:
            die(f"--signer: {exc}", ExitCode.USAGE)
    try:
        key = Wallet.load(key_file, _key_password(password_file)).private_key
    except WalletError as exc:
        die(f"{key_file}: {exc}", ExitCode.WALLET)
    chain = connect_chain(rpc, key)
    if signer is not None and signer != chain.address:
        err_console.print(
            f"[yellow]warning:[/] the coordinator signs vouchers with its operator key "
            f"{chain.address}; it will not serve a Vault whose signer is {signer}",
            highlight=False,
        )
    _token, _vault, deployment = deploy_contracts(
        chain, signer=signer, escape_period_s=escape_period
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deployment.to_json())
    env = {"QUACKMESH_CHAIN": rpc, "QUACKMESH_CHAIN_KEY_FILE": str(key_file.resolve())}
    if password_file is not None:
        env["QUACKMESH_CHAIN_KEY_PASSWORD_FILE"] = str(password_file.resolve())
    if out is not None:
        env["QUACKMESH_CHAIN_DEPLOYMENT"] = str(path.resolve())
    if json_out:
        print_json(
            {
                **deployment.__dict__,
                "operator": chain.address,
                "signer": signer or chain.address,
                "escape_period_s": escape_period,
                "path": str(path),
                "env": env,
            }
        )
        return
    grid = Table.grid(padding=(0, 2))
    for label, value in (
        ("chain id", str(deployment.chain_id)),
        ("token", deployment.token),
        ("vault", deployment.vault),
        ("block", str(deployment.block)),
        ("operator", chain.address),
        ("signer", signer or chain.address),
        ("escape period", f"{escape_period}s"),
    ):
        grid.add_row(label, value)
    console.print(grid)
    console.print(f"recorded in {path}", highlight=False)
    console.print("start a coordinator on it with:")
    for name, value in env.items():
        console.print(f"  {name}={value}", highlight=False, soft_wrap=True)
    if password_file is None:
        console.print(f"  {KEY_PASSWORD_ENV}=…  (or QUACKMESH_CHAIN_KEY_PASSWORD_FILE)")


# --- info ----------------------------------------------------------------------------------


def info_table(info: ChainInfoPublic) -> Table:
    grid = Table.grid(padding=(0, 2))
    backed = f"{format_duck(info.vault_balance)} held, {format_duck(info.backed)} owed"
    if info.vault_balance < info.backed:
        backed += "  [bold red]UNDER-BACKED[/]"
    last = info.last_epoch
    epoch = (
        "-"
        if last is None
        else f"#{last.epoch} {last.state}, {format_duck(last.total)} in {last.accounts} "
        f"wallets, root {short_hash(last.root)}, {when(last.posted_at or last.created_at)}"
    )
    rows = (
        ("mode", "in-process chain (local)" if info.mode == "local" else "JSON-RPC node"),
        ("chain id", str(info.chain_id)),
        ("token", info.token),
        ("vault", info.vault),
        ("operator", info.operator),
        ("blocks", f"{info.scanned_block} applied of {info.head_block}"),
        ("confirmations", str(info.confirmations)),
        ("vault DUCK", backed),
        ("epoch every", f"{info.epoch_s:g}s"),
        ("last epoch", epoch),
    )
    for label, value in rows:
        grid.add_row(label, value)
    return grid


@app.command()
@handle_errors
def info(coordinator: CoordOpt = DEFAULT_COORDINATOR, json_out: JsonOpt = False) -> None:
    """What the coordinator settles against: the chain, the contracts and how far it got."""
    # Public reads: a throwaway key signs the requests.
    with Client(coordinator, Wallet.create()) as client:
        got = client.chain_info()
    if json_out:
        print_json(got.model_dump(mode="json"))
    else:
        console.print(info_table(got), highlight=False)
