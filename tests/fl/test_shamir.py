"""Shamir secret sharing over GF(2**521 - 1): reconstruction, thresholds, bad shares."""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quackmesh.fl.secagg.errors import BadEncoding, InconsistentShares, TooFewParticipants
from quackmesh.fl.secagg.shamir import PRIME, combine, lagrange_coefficients, split


def test_any_t_of_n_shares_reconstruct_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, threshold=3, xs=range(1, 7))
    for subset in itertools.combinations(sorted(shares), 3):
        assert combine({x: shares[x] for x in subset}, threshold=3) == secret


@settings(max_examples=40, database=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_property_threshold_subsets_reconstruct(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 2**16), min_size=n, max_size=n, unique=True))
    shares = split(secret, threshold=t, xs=xs)
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=t, max_size=n, unique=True))
    assert combine({x: shares[x] for x in subset}, threshold=t) == secret


def test_t_minus_one_shares_give_a_different_value() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, threshold=4, xs=range(1, 8))
    xs = [1, 2, 3]
    lam = lagrange_coefficients(xs)
    guess = sum(lam_i * shares[x] for lam_i, x in zip(lam, xs, strict=True)) % PRIME
    assert guess != int.from_bytes(secret, "big")
    with pytest.raises(TooFewParticipants):
        combine({x: shares[x] for x in xs}, threshold=4)
    # Pretending the threshold is lower yields a random field element, not a 32-byte secret.
    with pytest.raises(InconsistentShares):
        combine({x: shares[x] for x in xs}, threshold=3)


def test_a_tampered_share_is_rejected_when_extra_shares_are_given() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, threshold=3, xs=range(1, 6))
    for victim in shares:
        bad = dict(shares)
        bad[victim] = (bad[victim] + 1) % PRIME
        with pytest.raises(InconsistentShares):
            combine(bad, threshold=3)


def test_bad_coordinates_and_values_are_rejected() -> None:
    with pytest.raises(BadEncoding):
        split(b"x" * 32, threshold=2, xs=[0, 1, 2])  # f(0) is the secret itself
    with pytest.raises(BadEncoding):
        split(b"x" * 32, threshold=2, xs=[1, 1, 2])
    with pytest.raises(BadEncoding):
        split(b"x" * 66, threshold=2, xs=[1, 2])
    with pytest.raises(TooFewParticipants):
        split(b"x" * 32, threshold=3, xs=[1, 2])
    with pytest.raises(BadEncoding):
        combine({1: PRIME, 2: 5}, threshold=2)
    with pytest.raises(BadEncoding):
        combine({True: 1, 2: 5}, threshold=2)


def test_seeded_polynomials_are_deterministic_and_bound_to_the_threshold() -> None:
    secret, seed = secrets.token_bytes(32), secrets.token_bytes(32)
    first = split(secret, threshold=3, xs=range(1, 6), seed=seed)
    assert split(secret, threshold=3, xs=range(1, 6), seed=seed) == first
    other_t = split(secret, threshold=4, xs=range(1, 6), seed=seed)
    assert all(other_t[x] != first[x] for x in first)
    assert split(secret, threshold=3, xs=range(1, 6)) != first  # fresh randomness


def test_lagrange_coefficients_reproduce_a_constant_polynomial() -> None:
    assert sum(lagrange_coefficients([3, 9, 17, 40])) % PRIME == 1
    assert lagrange_coefficients([1, 2], at=1) == [1, 0]
