"""The ``quackmesh`` command: wallets, nodes, jobs, ledger, a local network and the demo."""

from __future__ import annotations

import typer

from quackmesh import __version__
from quackmesh.cli import chain, demo, job, ledger, market, node, rent, train, up, wallet, webhook
from quackmesh.cli.gateway import chat as chat_command
from quackmesh.cli.infer import app as infer_app  # `infer embed` is added by cli.gateway
from quackmesh.cli.keys import app as keys_app

app = typer.Typer(
    name="quackmesh",
    help="QuackMesh: a decentralized AI compute network. Run `quackmesh demo` for the tour.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(wallet.app, name="wallet")
app.add_typer(node.app, name="node")
app.add_typer(job.app, name="job")
app.add_typer(ledger.app, name="ledger")
app.add_typer(market.app, name="market")
app.add_typer(rent.rental_app, name="rental")
app.add_typer(webhook.app, name="webhook")
app.add_typer(chain.app, name="chain")
app.add_typer(keys_app, name="keys")
app.add_typer(infer_app, name="infer")
app.command("rent")(rent.rent)
app.command("train")(train.train)
app.command("chat")(chat_command)
app.command("train-status")(train.train_status)
app.command("up")(up.up)
app.command("demo")(demo.demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quackmesh {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    """QuackMesh command line."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
