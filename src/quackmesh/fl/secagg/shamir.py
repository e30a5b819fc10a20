"""Shamir secret sharing over the Mersenne prime field GF(2**521 - 1).

Shamir, "How to share a secret", CACM 22(11), 1979 — as used by Bonawitz et al., CCS'17
("Practical Secure Aggregation for Privacy-Preserving Machine Learning", §4) to share each
client's mask seed ``b`` and pairwise key ``s_sk`` among the other clients.

A secret of up to 65 bytes is read as a big-endian integer (< 2**520 < p), the constant term
of a random polynomial of degree ``threshold - 1``; client ``x`` (an id >= 1) holds the
polynomial's value at ``x``. Any ``threshold`` shares give the secret back by Lagrange
interpolation at 0; fewer give a uniformly random field element, independent of the secret.

Coefficients come from :mod:`secrets`, or deterministically from a 32-byte ``seed`` (so a
stateless client that repeats a step sends the same shares): SHAKE-256 output in 80-byte
chunks reduced mod p, a bias below 2**-119. Everything is pure Python integers.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence

from quackmesh.fl.secagg.errors import BadEncoding, InconsistentShares, TooFewParticipants

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "combine",
    "lagrange_coefficients",
    "split",
]

PRIME = 2**521 - 1
# Bytes of a big-endian field element (521 bits round up to 66 bytes).
SHARE_BYTES = 66
_CHUNK = 80  # 640 bits of SHAKE output per coefficient: reduction bias < 2**-119


def _check_xs(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise BadEncoding("share x-coordinates must be distinct", xs=list(xs))
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 < x < PRIME:
            raise BadEncoding(f"share x-coordinate {x!r} must be an int in [1, p)", x=x)


def _coefficients(count: int, *, seed: bytes | None, threshold: int) -> list[int]:
    if seed is None:
        return [secrets.randbelow(PRIME) for _ in range(count)]
    # The threshold is bound in, so asking for another degree gives an unrelated polynomial.
    stream = hashlib.shake_256(
        b"quackmesh/shamir/v1|" + threshold.to_bytes(4, "big") + seed
    ).digest(_CHUNK * count)
    return [
        int.from_bytes(stream[i * _CHUNK : (i + 1) * _CHUNK], "big") % PRIME for i in range(count)
    ]


def split(
    secret: bytes, *, threshold: int, xs: Sequence[int], seed: bytes | None = None
) -> dict[int, int]:
    """Share ``secret`` so that any ``threshold`` of the points ``xs`` recover it.

    Returns ``{x: f(x)}`` for each ``x`` in ``xs``. ``seed`` (>= 16 bytes) makes the
    polynomial deterministic; without it the coefficients are fresh randomness.
    """
    if not 1 <= len(secret) < SHARE_BYTES:
        raise BadEncoding(f"secret must be 1..{SHARE_BYTES - 1} bytes", length=len(secret))
    if seed is not None and len(seed) < 16:
        raise BadEncoding("coefficient seed must be at least 16 bytes", length=len(seed))
    _check_xs(xs)
    if not 1 <= threshold <= len(xs):
        raise TooFewParticipants(
            f"threshold {threshold} must be between 1 and the number of shares {len(xs)}",
            threshold=threshold,
            shares=len(xs),
        )
    # f(x) = secret + a_1 x + ... + a_{t-1} x^{t-1}; highest degree first for Horner.
    poly = [*reversed(_coefficients(threshold - 1, seed=seed, threshold=threshold))]
    poly.append(int.from_bytes(secret, "big"))
    shares: dict[int, int] = {}
    for x in xs:
        acc = 0
        for coefficient in poly:
            acc = (acc * x + coefficient) % PRIME
        shares[x] = acc
    return shares


def lagrange_coefficients(xs: Sequence[int], *, at: int = 0) -> list[int]:
    """The Lagrange basis values ``l_i(at)`` for the points ``xs`` (mod p).

    ``f(at) = sum(l_i * f(x_i))`` for any polynomial of degree below ``len(xs)``. The
    coefficients depend only on the points, so a server reconstructing many secrets from the
    same clients computes them once.
    """
    _check_xs(xs)
    out: list[int] = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return out


def _check_values(shares: Mapping[int, int]) -> None:
    for x, y in shares.items():
        if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < PRIME:
            raise BadEncoding(f"share value for x={x} is not a field element", x=x)


def combine(shares: Mapping[int, int], *, threshold: int, length: int = 32) -> bytes:
    """Recover a ``length``-byte secret from at least ``threshold`` shares ``{x: y}``.

    The ``threshold`` shares with the smallest x interpolate the polynomial; every further
    share must lie on it, and the result must fit in ``length`` bytes, or
    :class:`InconsistentShares` is raised (a wrong share passes neither check except with
    probability about ``2**(8 * length - 521)``).
    """
    if threshold < 1 or len(shares) < threshold:
        raise TooFewParticipants(
            f"need {threshold} shares to reconstruct, got {len(shares)}",
            threshold=threshold,
            shares=len(shares),
        )
    xs = sorted(shares)
    _check_xs(xs)
    _check_values(shares)
    base, extra = xs[:threshold], xs[threshold:]
    ys = [shares[x] for x in base]
    secret = sum(lam * y for lam, y in zip(lagrange_coefficients(base), ys, strict=True)) % PRIME
    for x in extra:
        expected = sum(
            lam * y for lam, y in zip(lagrange_coefficients(base, at=x), ys, strict=True)
        )
        if expected % PRIME != shares[x]:
            raise InconsistentShares(f"share at x={x} is not on the polynomial", x=x)
    if secret >= 1 << (8 * length):
        raise InconsistentShares(
            f"shares do not reconstruct a {length}-byte secret", threshold=threshold
        )
    return secret.to_bytes(length, "big")
