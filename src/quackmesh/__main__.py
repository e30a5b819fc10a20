"""``python -m quackmesh`` runs the CLI."""

from quackmesh.cli.main import main

main()
