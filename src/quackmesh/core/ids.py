"""Identifiers: prefixed random ids for jobs, tasks and leases, and address normalisation."""

from __future__ import annotations

import re
import secrets

from eth_utils.address import to_checksum_address

__all__ = ["ADDRESS_RE", "SHA256_RE", "new_id", "normalize_address"]

ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def new_id(prefix: str) -> str:
    """A short, URL-safe, unguessable id such as ``job_3f9c0a…`` (prefix says the kind)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def normalize_address(address: str) -> str:
    """Return the EIP-55 checksummed form of an address; ``ValueError`` if malformed."""
    if not ADDRESS_RE.match(address):
        raise ValueError(f"not an Ethereum address: {address!r}")
    return str(to_checksum_address(address))
