"""``quackmesh ledger verify|export``: audit the DUCK journal, locally or remotely; and
``ledger proof|check-proof``: a wallet's balance proven against the root on chain."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from quackmesh.cli.chain import VaultReader, when
from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    err_console,
    handle_errors,
    print_json,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.coordinator.db.engine import make_engine, make_session_factory
from quackmesh.coordinator.settings import Settings
from quackmesh.core.errors import ChainError, ValidationFailed
from quackmesh.core.ids import normalize_address
from quackmesh.core.money import format_duck
from quackmesh.core.wallet import Wallet
from quackmesh.ledger import (
    LedgerCheck,
    PostedTx,
    SqlLedger,
    audit_chain,
    read_jsonl,
    write_csv,
    write_jsonl,
)
from quackmesh.ledger.merkle import BalanceProof, verify_proof
from quackmesh.sdk import Client

app = typer.Typer(help="Audit and export the DUCK ledger.", no_args_is_help=True)

CoordOpt = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        "-c",
        help="audit a remote coordinator's public journal instead of the local database",
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="local database \\[default: QUACKMESH_DATABASE_URL or SQLite in QUACKMESH_HOME]",
    ),
]
PAGE = 5000


def _remote_journal(url: str) -> Iterator[PostedTx]:
    # Reading the journal needs no identity; a throwaway key signs nothing here.
    with Client(url, Wallet.create()) as client:
        after = 0
        while True:
            page = list(read_jsonl(io.StringIO(client.ledger_journal(after=after, limit=PAGE))))
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].seq


def _local_url(database_url: str | None) -> str:
    url = database_url or Settings().resolved_database_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        die(
            f"no coordinator database at {url}; pass --database-url or --coordinator",
            ExitCode.USAGE,
        )
    return url


@app.command()
@handle_errors
def verify(
    coordinator: CoordOpt = None,
    database_url: DbOpt = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-hash the journal chain and check that every account sums to zero."""
    if coordinator:
        check: LedgerCheck = audit_chain(_remote_journal(coordinator))
    else:
        engine = make_engine(_local_url(database_url))
        with make_session_factory(engine)() as session:
            check = SqlLedger().verify(session)
        engine.dispose()
    if json_out:
        print_json(
            {
                "ok": check.ok,
                "transactions": check.transactions,
                "head": check.head,
                "total": check.total,
                "problems": list(check.problems),
            }
        )
    elif check.ok:
        console.print(
            f"[green]ledger ok[/]: {check.transactions} transactions, sum {check.total}, head {check.head[:16]}…"
        )
    else:
        for problem in check.problems:
            console.print(f"[red]problem:[/] {problem}", highlight=False)
    if not check.ok:
        raise typer.Exit(int(ExitCode.CHECK_FAILED))


@app.command()
@handle_errors
def export(
    fmt: Annotated[
        Literal["csv", "jsonl"],
        typer.Option(
            "--format", "-f", help="csv (one row per entry) or jsonl (one transaction per line)"
        ),
    ] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file \\[default: stdout]")
    ] = None,
    coordinator: CoordOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Write the journal as CSV or JSON Lines."""
    writer = write_csv if fmt == "csv" else write_jsonl
    fh = output.open("w", newline="") if output else sys.stdout
    try:
        if coordinator:
            count = writer(_remote_journal(coordinator), fh)
        else:
            engine = make_engine(_local_url(database_url))
            with make_session_factory(engine)() as session:
                count = writer(SqlLedger().iter_journal(session), fh)
            engine.dispose()
    finally:
        if output:
            fh.close()
    if output:
        console.print(f"wrote {count} transactions to {output}")


# --- balance proofs against the root on chain ----------------------------------------------

RemoteOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL \\[env QUACKMESH_COORDINATOR]")
]
PROOF_FIELDS = ("epoch", "account", "balance", "proof", "root")


@app.command()
@handle_errors
def proof(
    address: Annotated[str, typer.Argument(help="the wallet address to prove")],
    epoch: Annotated[
        int | None, typer.Option("--epoch", min=1, help="a posted epoch \\[default: the latest]")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the proof JSON to this file")
    ] = None,
    coordinator: RemoteOpt = DEFAULT_COORDINATOR,
    json_out: Annotated[bool, typer.Option("--json", help="print the proof JSON")] = False,
) -> None:
    """Fetch ADDRESS's wallet balance in a posted epoch with its Merkle proof; check it
    with `quackmesh ledger check-proof FILE --rpc URL`, which trusts the chain alone."""
    try:
        address = normalize_address(address)
    except ValueError as exc:
        die(str(exc), ExitCode.USAGE)
    # Proofs are public (like the journal): a throwaway key signs the request.
    with Client(coordinator, Wallet.create()) as client:
        got = client.balance_proof(address, epoch=epoch)
    data = got.model_dump(mode="json")
    if out is not None:
        out.write_text(json.dumps(data, indent=2) + "\n")
    if json_out:
        print_json(data)
        return
    console.print(
        f"epoch {got.epoch}: {got.account} held {format_duck(got.balance)}\n"
        f"root  {got.root}\n"
        f"proof {len(got.proof)} hashes; vault {got.vault} on chain {got.chain_id}",
        highlight=False,
    )
    if out is not None:
        console.print(
            f"wrote {out}; check it with `quackmesh ledger check-proof {out} --rpc URL` "
            "(the chain's JSON-RPC node: then nothing rests on the coordinator)",
            highlight=False,
        )


def _read_proof(path: Path) -> tuple[BalanceProof, dict[str, Any]]:
    """The proof's core fields (strictly parsed) and the whole object (vault, chain id)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        die(f"{path} is not a proof file: {exc}", ExitCode.CHECK_FAILED)
    if not isinstance(data, dict):
        die(f"{path} is not a proof file: not a JSON object", ExitCode.CHECK_FAILED)
    try:
        parsed = BalanceProof.from_dict({k: data[k] for k in PROOF_FIELDS if k in data})
    except ValidationFailed as exc:
        die(f"{path} is not a valid balance proof: {exc.detail}", ExitCode.CHECK_FAILED)
    if parsed.epoch is None or parsed.epoch < 1:
        die(f"{path} names no posted epoch (epoch {parsed.epoch})", ExitCode.CHECK_FAILED)
    return parsed, data


def _root_on_chain(rpc: str, vault: str, epoch: int) -> tuple[VaultReader, bytes, int]:
    """The Vault's root for ``epoch`` as the node at ``rpc`` reports it."""
    try:
        address = normalize_address(vault)
    except ValueError as exc:
        die(f"vault: {exc}", ExitCode.CHECK_FAILED)
    try:
        reader = VaultReader.open(rpc, address)
    except ChainError as exc:
        die(exc.detail, ExitCode.UNREACHABLE)
    if not reader.deployed():
        die(f"there is no contract at {address} on chain {reader.chain_id}", ExitCode.CHECK_FAILED)
    try:
        root, posted_at = reader.root(epoch)
    except ChainError as exc:
        die(f"{exc.detail} (is {address} a Vault?)", ExitCode.CHECK_FAILED)
    return reader, root, posted_at


@app.command("check-proof")
@handle_errors
def check_proof(
    file: Annotated[
        Path, typer.Argument(help="a proof from `quackmesh ledger proof --out`", exists=True)
    ],
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc", help="read the root from the Vault through this JSON-RPC node (trustless)"
        ),
    ] = None,
    vault: Annotated[
        str | None, typer.Option("--vault", help="the Vault's address \\[default: the file's]")
    ] = None,
    coordinator: RemoteOpt = DEFAULT_COORDINATOR,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Check a balance proof against the root the Vault holds for its epoch.

    With --rpc the root comes straight from the chain and the Vault verifies the proof
    too: nothing depends on the coordinator. Without it (an in-process chain only the
    coordinator can reach) the coordinator reads the root, so the check trusts it."""
    parsed, data = _read_proof(file)
    epoch = int(parsed.epoch or 0)
    problems: list[str] = []
    reader: VaultReader | None = None
    if rpc is not None:
        address = vault or data.get("vault")
        if not isinstance(address, str):
            die(f"{file} names no vault; pass --vault ADDRESS", ExitCode.USAGE)
        reader, root, posted_at = _root_on_chain(rpc, address, epoch)
        vault_address, chain_id = reader.address, reader.chain_id
        if isinstance(data.get("chain_id"), int) and data["chain_id"] != chain_id:
            problems.append(f"the proof is for chain {data['chain_id']}, {rpc} is chain {chain_id}")
    else:
        err_console.print(
            f"[yellow]warning:[/] no --rpc: the root is read by the coordinator at "
            f"{coordinator}, so this check trusts it. Pass --rpc URL to read it from the "
            "chain yourself.",
            highlight=False,
        )
        with Client(coordinator, Wallet.create()) as client:
            info = client.chain_info()
            got = client.chain_root(epoch)
        root, posted_at = bytes.fromhex(got.root[2:]), got.posted_at
        vault_address, chain_id = info.vault, info.chain_id
        claimed = vault or data.get("vault")
        if isinstance(claimed, str) and claimed.lower() != info.vault.lower():
            problems.append(f"the proof is for Vault {claimed}, the coordinator's is {info.vault}")
    if posted_at == 0:
        problems.append(f"the Vault at {vault_address} holds no root for epoch {epoch}")
    elif root != parsed.root_bytes:
        problems.append(
            f"the file's root {parsed.root} is not the root on chain for epoch {epoch} "
            f"(0x{root.hex()})"
        )
    if posted_at and not verify_proof(root, parsed.account, parsed.balance, parsed.proof_bytes):
        problems.append(
            f"the proof does not link {format_duck(parsed.balance)} for {parsed.account} "
            "to the root on chain"
        )
    if posted_at and reader is not None:
        try:
            on_chain = reader.verify_balance(
                parsed.account, parsed.balance, parsed.proof_bytes, root
            )
        except ChainError as exc:
            problems.append(exc.detail)
        else:
            if not on_chain:
                problems.append("the Vault's verify_balance rejects the proof")
    if json_out:
        print_json(
            {
                "ok": not problems,
                "epoch": epoch,
                "account": parsed.account,
                "balance": parsed.balance,
                "root": "0x" + root.hex(),
                "posted_at": posted_at,
                "vault": vault_address,
                "chain_id": chain_id,
                "trusts_coordinator": rpc is None,
                "problems": problems,
            }
        )
    elif not problems:
        source = "read from the chain" if rpc is not None else "as reported by the coordinator"
        console.print(
            f"[green]proof OK[/]: {parsed.account} held {format_duck(parsed.balance)} at "
            f"epoch {epoch}\nroot 0x{root.hex()} (posted {when(posted_at)}, {source}; "
            f"Vault {vault_address}, chain {chain_id})",
            highlight=False,
        )
    else:
        for problem in problems:
            err_console.print(f"[red]proof FAILED:[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(int(ExitCode.CHECK_FAILED))
