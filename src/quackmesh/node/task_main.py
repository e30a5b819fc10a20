"""Entry point of the sandboxed child process that runs one task.

Usage::

    python -m quackmesh.node.task_main --kind ml.kmeans --params-file params.json \\
        --input data=/path/to/iris.csv --output result.json

It loads the workload, validates the spec and the inputs, runs it (all through
``Workload.execute``) and writes ``canonical_json(result)`` to the output file (through a
temporary file and a rename, so a killed child never leaves a half-written result). The
parent (:mod:`quackmesh.node.sandbox`) reads only the exit code, the output file and the
tail of stderr; the exit codes are :class:`ExitCode`.

This module must stay lean: it imports only the standard library and ``quackmesh.core``
at start-up, and the workload registry (numpy, scikit-learn, …) inside :func:`main`, so
that running out of memory while importing is reported as such. Nothing here may import
httpx, FastAPI or SQLAlchemy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from quackmesh.core.canon import canonical_json
from quackmesh.core.errors import ValidationFailed

__all__ = ["EXIT_CODE_HELP", "ExitCode", "main"]

_TRACEBACK_LINES = 40  # how much of a traceback to print for an unexpected failure


class ExitCode(IntEnum):
    """How the child process ended; every code has help text in :data:`EXIT_CODE_HELP`."""

    OK = 0  # the result was written to --output
    BAD_INPUT = 2  # bad arguments, spec, params file or input data
    OUT_OF_MEMORY = 3  # MemoryError: the address-space limit was reached
    FAILED = 4  # any other exception inside the workload
    BAD_OUTPUT = 5  # the result is not a JSON object or could not be written


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "Success: the canonical JSON result was written to the output file.",
    ExitCode.BAD_INPUT: (
        "Bad input: unknown kind, invalid params (ValidationFailed), an unreadable params "
        "file, a missing input file or input data that does not load. One line on stderr."
    ),
    ExitCode.OUT_OF_MEMORY: "Out of memory: a MemoryError was raised (memory limit reached).",
    ExitCode.FAILED: "The workload raised an unexpected exception; traceback tail on stderr.",
    ExitCode.BAD_OUTPUT: (
        "The result could not be serialised as canonical JSON (not a dict, NaN, foreign "
        "types) or the output file could not be written."
    ),
}


class _BadInput(Exception):
    """Raised for problems with the command line, params file or input files."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one task as described by ``argv`` and return its :class:`ExitCode`."""
    args = _parser().parse_args(argv)  # argparse exits with 2 (BAD_INPUT) on a usage error
    try:
        params = _read_params(Path(args.params_file))
        inputs = _parse_inputs(args.input)
        result = _run(args.kind, params, inputs)
    except (_BadInput, ValidationFailed) as exc:
        return _fail(ExitCode.BAD_INPUT, f"input_error: {exc}")
    except BaseException as exc:
        if _is_memory_error(exc):
            return _fail(ExitCode.OUT_OF_MEMORY, f"memory_limit: {type(exc).__name__}: {exc}")
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to eat
            raise
        tail = traceback.format_exc().splitlines()[-_TRACEBACK_LINES:]
        return _fail(ExitCode.FAILED, "\n".join(tail))
    try:
        _write_output(Path(args.output), result)
    except MemoryError as exc:
        return _fail(ExitCode.OUT_OF_MEMORY, f"memory_limit: while writing output: {exc}")
    except (TypeError, ValueError, OSError) as exc:
        return _fail(ExitCode.BAD_OUTPUT, f"output_error: {type(exc).__name__}: {exc}")
    return ExitCode.OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m quackmesh.node.task_main",
        description="Run one QuackMesh task (used by the node sandbox).",
        epilog="exit codes: " + "; ".join(f"{int(code)} {code.name}" for code in ExitCode),
    )
    parser.add_argument("--kind", required=True, help="workload kind, e.g. ml.kmeans")
    parser.add_argument("--params-file", required=True, help="JSON object with the params")
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an input file; repeat for several inputs",
    )
    parser.add_argument("--output", required=True, help="where to write the JSON result")
    return parser


def _read_params(path: Path) -> dict[str, Any]:
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _BadInput(f"cannot read params file {path.name}: {exc}") from exc
    if not isinstance(params, dict):
        raise _BadInput(f"params must be a JSON object, got {type(params).__name__}")
    return params


def _parse_inputs(items: Sequence[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for item in items:
        name, sep, raw_path = item.partition("=")
        if not sep or not name or not raw_path:
            raise _BadInput(f"--input must be NAME=PATH, got {item!r}")
        if name in inputs:
            raise _BadInput(f"input {name!r} given twice")
        path = Path(raw_path)
        if not path.is_file():
            raise _BadInput(f"input {name!r} is not a readable file: {raw_path}")
        inputs[name] = path
    return inputs


def _run(kind: str, params: dict[str, Any], inputs: dict[str, Path]) -> Any:
    # Imported here: the registry pulls in numpy/scikit-learn (and any modules named in
    # QUACKMESH_WORKLOAD_MODULES), and a MemoryError while importing is a memory failure.
    from quackmesh.workloads import get_workload

    # execute() is the workload's node-side driver: parse the spec, check the inputs
    # (data that does not load is ValidationFailed), run, and check the result is JSON.
    return get_workload(kind).execute(params, inputs)


def _write_output(path: Path, result: Any) -> None:
    if not isinstance(result, dict):
        raise TypeError(f"result must be a JSON object, got {type(result).__name__}")
    data = canonical_json(result)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _is_memory_error(exc: BaseException) -> bool:
    """True when ``exc`` or anything in its cause/context chain is a MemoryError.

    Libraries often wrap an allocation failure (``raise DataError(...) from MemoryError``).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _fail(code: ExitCode, message: str) -> int:
    if code is ExitCode.BAD_INPUT:
        message = " ".join(message.split())  # one line, as promised to the parent
    # Printing can itself fail when memory is gone; the exit code still tells the parent.
    with contextlib.suppress(Exception):
        print(message, file=sys.stderr, flush=True)
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
