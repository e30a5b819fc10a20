"""Exit codes of the ``quackmesh`` command, each with the help text shown in the README.

A test checks that every code here is documented there (Flower's ``exit_code.py`` idea).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["HELP", "ExitCode"]


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected error (a bug: please report it with the log)
    USAGE = 2  # bad command line (Typer/Click's own code)
    WALLET = 3  # wallet file missing, unreadable, or wrong password
    UNREACHABLE = 4  # the coordinator (or a chain node) could not be reached
    REJECTED = 5  # the coordinator refused the request (4xx problem)
    JOB_FAILED = 6  # the followed job ended failed or cancelled
    INSUFFICIENT_BALANCE = 7  # not enough DUCK for the escrow
    CHECK_FAILED = 8  # demo, ledger or balance-proof verification found a problem
    TIMEOUT = 9  # waited longer than --timeout


HELP: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error; the message says what happened",
    ExitCode.USAGE: "bad command line; see --help",
    ExitCode.WALLET: "wallet file missing or unreadable, or wrong password",
    ExitCode.UNREACHABLE: "the coordinator (or chain node) could not be reached at the given URL",
    ExitCode.REJECTED: "the coordinator rejected the request (the problem is printed)",
    ExitCode.JOB_FAILED: "the job ended failed or cancelled",
    ExitCode.INSUFFICIENT_BALANCE: "not enough DUCK in the wallet for the escrow",
    ExitCode.CHECK_FAILED: "a check failed: demo results, ledger chain, conservation or a balance proof",
    ExitCode.TIMEOUT: "gave up waiting after --timeout seconds",
}
