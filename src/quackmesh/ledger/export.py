"""Journal exports for accountants (CSV) and auditors (JSON Lines).

* CSV (RFC 4180, header row): one row per entry with the columns in :data:`CSV_COLUMNS`.
  ``created_at`` is ISO 8601 in UTC with microseconds (``2025-01-31T12:00:00.000001Z``),
  ``amount_micro`` the exact integer, ``amount_duck`` the same amount as a decimal string.
* JSON Lines: one object per transaction, keys as in :class:`~quackmesh.ledger.PostedTx`
  plus ``created_at_us`` (the integer that goes into the hash) and ``entries`` as
  ``{"account", "amount_micro", "amount_duck"}`` objects. :func:`read_jsonl` reads it back
  into ``PostedTx`` values that :func:`~quackmesh.ledger.audit_chain` can re-check.

Amounts are never written as JSON numbers with a fraction: DUCK strings come from
:func:`quackmesh.core.money.format_duck`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from quackmesh.core.errors import ValidationFailed
from quackmesh.core.money import format_duck
from quackmesh.ledger.base import PostedTx, Posting
from quackmesh.ledger.hashchain import created_at_micros

__all__ = ["CSV_COLUMNS", "iso_utc", "read_jsonl", "write_csv", "write_jsonl"]

CSV_COLUMNS = (
    "seq",
    "tx_id",
    "created_at",
    "kind",
    "memo",
    "ref",
    "account",
    "amount_micro",
    "amount_duck",
    "prev_hash",
    "hash",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_utc(created_at: float) -> str:
    """Unix seconds -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (exact to the microsecond)."""
    moment = _EPOCH + timedelta(microseconds=created_at_micros(created_at))
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def write_csv(txs: Iterable[PostedTx], fh: TextIO) -> int:
    """Write a header and one row per entry; returns the number of transactions written."""
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for tx in txs:
        when = iso_utc(tx.created_at)
        for entry in tx.entries:
            writer.writerow(
                (
                    tx.seq,
                    tx.tx_id,
                    when,
                    tx.kind,
                    tx.memo,
                    "" if tx.ref is None else tx.ref,
                    entry.account,
                    entry.amount,
                    format_duck(entry.amount, symbol=False),
                    tx.prev_hash,
                    tx.hash,
                )
            )
        count += 1
    return count


def _tx_object(tx: PostedTx) -> dict[str, Any]:
    return {
        "seq": tx.seq,
        "tx_id": tx.tx_id,
        "created_at": iso_utc(tx.created_at),
        "created_at_us": created_at_micros(tx.created_at),
        "kind": tx.kind,
        "memo": tx.memo,
        "ref": tx.ref,
        "entries": [
            {
                "account": e.account,
                "amount_micro": e.amount,
                "amount_duck": format_duck(e.amount, symbol=False),
            }
            for e in tx.entries
        ],
        "prev_hash": tx.prev_hash,
        "hash": tx.hash,
    }


def write_jsonl(txs: Iterable[PostedTx], fh: TextIO) -> int:
    """Write one JSON object per line per transaction; returns how many were written."""
    count = 0
    for tx in txs:
        fh.write(json.dumps(_tx_object(tx), ensure_ascii=False, separators=(",", ":")))
        fh.write("\n")
        count += 1
    return count


def read_jsonl(fh: TextIO) -> Iterator[PostedTx]:
    """Read :func:`write_jsonl` output back; ``ValidationFailed`` names a malformed line."""
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            entries = tuple(Posting(e["account"], int(e["amount_micro"])) for e in obj["entries"])
            yield PostedTx(
                seq=int(obj["seq"]),
                tx_id=str(obj["tx_id"]),
                kind=str(obj["kind"]),
                memo=str(obj["memo"]),
                ref=obj["ref"],
                created_at=int(obj["created_at_us"]) / 1_000_000,
                entries=entries,
                prev_hash=str(obj["prev_hash"]),
                hash=str(obj["hash"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationFailed(f"line {lineno} is not a journal transaction: {exc}") from exc
