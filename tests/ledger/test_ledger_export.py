"""CSV and JSON Lines exports carry the journal exactly; JSONL can be re-audited offline."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import datetime

import pytest

from quackmesh.core.errors import ValidationFailed
from quackmesh.ledger import (
    CSV_COLUMNS,
    PostedTx,
    audit_chain,
    job_escrow_account,
    read_jsonl,
    write_csv,
    write_jsonl,
)
from quackmesh.ledger.export import iso_utc

from .ledger_support import ALICE, BOB, DUCK, LedgerDB

ESCROW = job_escrow_account("job_1")


@pytest.fixture
def journal(ldb: LedgerDB) -> list[PostedTx]:
    with ldb.sessions.begin() as s:
        ldb.ledger.faucet(s, address=ALICE, amount=10 * DUCK + 1)
        ldb.ledger.escrow(s, owner=ALICE, account=ESCROW, amount=4 * DUCK, ref="job_1")
        ldb.ledger.settle(s, escrow=ESCROW, provider=BOB, amount=1_500_000, fee=15, ref="job_1")
    with ldb.sessions() as s:
        return list(ldb.ledger.iter_journal(s))


def test_csv_has_one_row_per_entry_with_exact_amounts(journal: list[PostedTx]) -> None:
    fh = io.StringIO()
    assert write_csv(journal, fh) == 3
    fh.seek(0)
    reader = csv.DictReader(fh)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    expected = [(tx, e) for tx in journal for e in tx.entries]
    assert len(rows) == len(expected) == 7
    for row, (tx, entry) in zip(rows, expected, strict=True):
        assert int(row["seq"]) == tx.seq and row["tx_id"] == tx.tx_id
        assert row["kind"] == tx.kind and row["memo"] == tx.memo
        assert row["ref"] == (tx.ref or "")
        assert row["account"] == entry.account
        assert int(row["amount_micro"]) == entry.amount
        assert row["prev_hash"] == tx.prev_hash and row["hash"] == tx.hash
        when = datetime.fromisoformat(row["created_at"])
        assert row["created_at"].endswith("Z")
        assert round(when.timestamp() * 1_000_000) == round(tx.created_at * 1_000_000)
    assert rows[0]["amount_duck"] == "-10.000001"
    assert rows[1]["amount_duck"] == "10.000001"
    assert [r["amount_duck"] for r in rows[4:]] == ["-1.5", "1.499985", "0.000015"]


def test_jsonl_round_trips_and_re_audits(journal: list[PostedTx]) -> None:
    fh = io.StringIO()
    assert write_jsonl(journal, fh) == 3
    lines = fh.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["entries"][0] == {
        "account": "mint",
        "amount_micro": -10_000_001,
        "amount_duck": "-10.000001",
    }
    assert first["created_at"] == iso_utc(journal[0].created_at)
    fh.seek(0)
    back = list(read_jsonl(fh))
    assert back == journal
    check = audit_chain(back, expected_head=journal[-1].hash)
    assert check.ok and check.transactions == 3 and check.total == 0


def test_audit_of_a_doctored_export_finds_the_transaction(journal: list[PostedTx]) -> None:
    doctored = list(journal)
    doctored[1] = dataclasses.replace(doctored[1], memo="changed")
    check = audit_chain(doctored)
    assert not check.ok and check.first_broken_seq == 2
    truncated = audit_chain(journal[:2], expected_head=journal[-1].hash)
    assert not truncated.ok and truncated.transactions == 2


def test_read_jsonl_names_the_bad_line() -> None:
    with pytest.raises(ValidationFailed, match="line 2"):
        list(read_jsonl(io.StringIO('\n{"seq": 1}\n')))


def test_iso_utc_is_exact_to_the_microsecond() -> None:
    assert iso_utc(0.000001) == "1970-01-01T00:00:00.000001Z"
    assert iso_utc(1_700_000_000.123456) == "2023-11-14T22:13:20.123456Z"
