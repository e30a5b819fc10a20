"""Shared CLI plumbing: options, wallet loading, one-line errors with exit codes."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import httpx
import typer
from rich.console import Console

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.coordinator.settings import default_home
from quackmesh.core.errors import InsufficientBalance, QuackMeshError
from quackmesh.core.money import parse_duck
from quackmesh.core.wallet import Wallet, WalletError
from quackmesh.sdk import Client

__all__ = [
    "DEFAULT_COORDINATOR",
    "PASSWORD_ENV",
    "console",
    "default_wallet_path",
    "die",
    "err_console",
    "handle_errors",
    "load_wallet",
    "parse_amount",
    "parse_param",
    "print_json",
    "read_password",
]

P = ParamSpec("P")
R = TypeVar("R")

PASSWORD_ENV = "QUACKMESH_WALLET_PASSWORD"
DEFAULT_COORDINATOR = os.environ.get("QUACKMESH_COORDINATOR", "http://127.0.0.1:8787")
console = Console()
err_console = Console(stderr=True)


def default_wallet_path() -> Path:
    return Path(os.environ.get("QUACKMESH_WALLET") or default_home() / "wallets" / "default.json")


def die(message: str, code: ExitCode) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(int(code))


def read_password(*, confirm: bool = False) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    if not sys.stdin.isatty():
        die(f"no wallet password: set {PASSWORD_ENV} or run in a terminal", ExitCode.WALLET)
    value: str = typer.prompt("Wallet password", hide_input=True, confirmation_prompt=confirm)
    return value


def load_wallet(path: Path | None) -> Wallet:
    wallet_path = path or default_wallet_path()
    if not wallet_path.exists():
        die(f"no wallet at {wallet_path}; create one with `quackmesh wallet new`", ExitCode.WALLET)
    try:
        return Wallet.load(wallet_path, read_password())
    except WalletError as exc:
        die(str(exc), ExitCode.WALLET)


def parse_amount(text: str, what: str) -> int:
    try:
        return parse_duck(text)
    except ValueError as exc:
        die(f"{what}: {exc}", ExitCode.USAGE)


def parse_param(item: str) -> tuple[str, Any]:
    """``k=v`` with ``v`` read as JSON when it parses (numbers, booleans, lists), else text."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        die(f"--param takes key=value, got {item!r}", ExitCode.USAGE)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one clear line and a documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except InsufficientBalance as exc:
            die(f"{exc.detail}", ExitCode.INSUFFICIENT_BALANCE)
        except QuackMeshError as exc:
            extra = exc.context.get("errors")
            suffix = f" ({exc.code})" if not extra else f" ({exc.code}: {extra})"
            die(f"{exc.detail}{suffix}", ExitCode.REJECTED)
        except httpx.TransportError as exc:
            die(f"cannot reach the coordinator: {exc}", ExitCode.UNREACHABLE)
        except WalletError as exc:
            die(str(exc), ExitCode.WALLET)

    return wrapper


def job_changes(
    client: Client, job_id: str, *, timeout: float, poll_s: float = 0.5
) -> Iterator[None]:
    """Yield whenever something may have changed for ``job_id``, until ``timeout``.

    Driven by the coordinator's event stream (``/v1/events/ws?job=ID``, from the job's
    first event, so nothing between the caller's first read and the connection is
    missed); if the stream cannot be reached, it falls back to polling every ``poll_s``.
    """
    deadline = time.monotonic() + timeout
    try:
        for _event in client.stream_events(
            job=job_id, after=0, timeout=timeout, idle_s=1.0, max_failures=3
        ):
            yield
        return
    except ConnectionError:
        pass
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        yield
