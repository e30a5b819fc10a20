"""Secure aggregation (Bonawitz et al., CCS'17): full rounds, dropouts, refusals, privacy."""

from __future__ import annotations

import base64
import importlib
import json
import types
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quackmesh.fl.secagg as secagg
from quackmesh.fl.secagg import (
    BadEncoding,
    ClientKeys,
    DecryptionFailed,
    InconsistentShares,
    ProtocolViolation,
    QuantConfig,
    SecAggError,
    TooFewParticipants,
    advertise,
    decode_vector,
    default_threshold,
    dequantize_sum,
    forward_shares,
    masked_input,
    quantize,
    share_keys,
    simulate_round,
    unmask,
    unmask_shares,
)
from quackmesh.fl.secagg.crypto import open_sealed, prg_uint32, seal
from quackmesh.fl.secagg.shamir import combine
from quackmesh.fl.secagg.wire import pair_seed

SUBMODULES = ["client", "crypto", "errors", "protocol", "quantize", "server", "shamir", "wire"]


def weighted_updates(
    n: int, d: int, *, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    weights = rng.integers(1, 200, size=n)  # (n,)
    updates = rng.normal(0.0, 0.05, size=(n, d)) * weights[:, None]  # (n, d), weighted
    return updates, weights


def assert_within_bound(
    got: npt.NDArray[np.float64], want: npt.NDArray[np.float64], quant: QuantConfig, n: int
) -> None:
    # The documented bound, plus float64 rounding of the reference sum itself.
    slack = 8 * n * np.finfo(np.float64).eps * quant.clip
    err = np.max(np.abs(got - want))
    assert err <= quant.error_bound(n) + slack, (err, quant.error_bound(n))


@dataclass
class Transcript:
    """Every message of a round run by hand up to the reveals."""

    tag: str
    threshold: int
    quant: QuantConfig
    d: int
    keys: dict[int, ClientKeys]
    u2_adverts: dict[int, dict[str, str]]
    inbox: dict[int, dict[int, str]]
    masked: dict[int, str]
    survivors: list[int]
    dropped: list[int]

    def reveal(self, me: int, **overrides: Any) -> dict[str, dict[int, str]]:
        kwargs: dict[str, Any] = {
            "me": me,
            "received": self.inbox[me],
            "peers": self.u2_adverts,
            "survivors": self.survivors,
            "dropped": self.dropped,
            "round_tag": self.tag,
        } | overrides
        return unmask_shares(self.keys[me], **kwargs)

    def unmask(self, reveal: dict[int, Any], **overrides: Any) -> tuple[Any, int]:
        kwargs: dict[str, Any] = {
            "masked": self.masked,
            "reveal": reveal,
            "peers": self.u2_adverts,
            "threshold": self.threshold,
            "quant": self.quant,
            "n_params": self.d,
            "round_tag": self.tag,
        } | overrides
        return unmask(**kwargs)


def run_by_hand(
    updates: npt.NDArray[np.float64],
    weights: npt.NDArray[np.int64],
    *,
    quant: QuantConfig,
    drop_after_shares: Sequence[int] = (),
    tag: str = "job-1/round-1",
    threshold: int | None = None,
) -> Transcript:
    n, d = updates.shape
    ids = list(range(1, n + 1))
    t = default_threshold(n) if threshold is None else threshold
    keys = {i: ClientKeys.derive(bytes([i]) * 32, round_tag=tag) for i in ids}
    adverts = {i: advertise(keys[i]) for i in ids}
    outgoing = {
        i: share_keys(keys[i], me=i, peers=adverts, threshold=t, round_tag=tag) for i in ids
    }
    inbox = forward_shares(outgoing)
    survivors = [i for i in ids if i not in drop_after_shares]
    masked = {
        i: masked_input(
            keys[i],
            me=i,
            peers=adverts,
            vector=updates[i - 1],
            weight=int(weights[i - 1]),
            quant=quant,
            round_tag=tag,
        )
        for i in survivors
    }
    dropped = [i for i in ids if i not in survivors]
    return Transcript(tag, t, quant, d, keys, adverts, inbox, masked, survivors, dropped)


# -- full rounds -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 10])
def test_round_without_dropout_sums_within_quantisation_bound(n: int) -> None:
    updates, weights = weighted_updates(n, 500, seed=n)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=n)
    total, total_weight = simulate_round(updates, weights, quant=quant, seed=1)
    assert total.shape == (500,) and total.dtype == np.float64
    assert_within_bound(total, updates.sum(axis=0), quant, n)
    assert total_weight == int(weights.sum())


def test_dropout_after_share_keys_recovers_the_survivors_sum() -> None:
    updates, weights = weighted_updates(8, 400, seed=2)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=8)
    total, total_weight = simulate_round(
        updates, weights, quant=quant, seed=2, drop_after_shares=[2, 5, 8]
    )
    alive = [i - 1 for i in range(1, 9) if i not in (2, 5, 8)]
    assert_within_bound(total, updates[alive].sum(axis=0), quant, len(alive))
    assert total_weight == int(weights[alive].sum())


def test_dropout_after_masking_still_unmasks_with_threshold_reveals() -> None:
    updates, weights = weighted_updates(9, 300, seed=3)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=9)
    # t = 5: seven survivors, of which only five reveal.
    total, total_weight = simulate_round(
        updates,
        weights,
        quant=quant,
        seed=3,
        drop_after_advertise=[9],
        drop_after_shares=[4],
        drop_after_masking=[1, 7],
    )
    alive = [i - 1 for i in range(1, 9) if i != 4]  # client 9 never sent shares
    assert_within_bound(total, updates[alive].sum(axis=0), quant, len(alive))
    assert total_weight == int(weights[alive].sum())


def test_too_many_dropouts_raise() -> None:
    updates, weights = weighted_updates(6, 50, seed=4)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=6)  # t = 4
    with pytest.raises(TooFewParticipants):  # three survivors: clients refuse to reveal
        simulate_round(updates, weights, quant=quant, drop_after_shares=[1, 2, 3])
    with pytest.raises(TooFewParticipants):  # six survivors but only three reveals
        simulate_round(updates, weights, quant=quant, drop_after_masking=[2, 4, 6])
    round_ = run_by_hand(updates, weights, quant=quant, drop_after_shares=[5, 6])
    reveal = {i: round_.reveal(i) for i in round_.survivors}
    three = {i: round_.masked[i] for i in (1, 2, 3)}
    with pytest.raises(TooFewParticipants):  # the server refuses fewer than t inputs
        round_.unmask({i: reveal[i] for i in (1, 2, 3)}, masked=three)


def test_values_outside_the_clip_range_are_saturated() -> None:
    updates = np.array([[5.0, -5.0, 0.25], [1.0, -3.0, 0.5]])
    quant = QuantConfig(clip=2.0, scale_bits=20, n_max=3)
    total, total_weight = simulate_round(updates, np.array([1, 2]), quant=quant)
    assert_within_bound(total, np.array([3.0, -4.0, 0.75]), quant, 2)
    assert total_weight == 3


# -- privacy of a single masked input ----------------------------------------------------


def test_a_single_masked_input_is_uniform_and_uncorrelated_with_the_update() -> None:
    n, d = 5, 20_000
    updates, weights = weighted_updates(n, d, seed=5)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=n)
    round_ = run_by_hand(updates, weights, quant=quant)
    masked = decode_vector(round_.masked[1], length=d + 1)[:d].astype(np.float64)
    as_plain = dequantize_sum(decode_vector(round_.masked[1], length=d + 1)[:d], quant)
    truth = updates[0]
    # Control: the quantised update itself is almost perfectly correlated with the truth.
    assert np.corrcoef(dequantize_sum(quantize(truth, quant), quant), truth)[0, 1] > 0.99
    assert abs(np.corrcoef(masked, truth)[0, 1]) < 0.1
    assert abs(np.corrcoef(as_plain, truth)[0, 1]) < 0.1
    assert abs(masked.mean() / 2**31 - 1) < 0.02
    counts = np.bincount((masked // 2**28).astype(np.int64), minlength=16)
    assert np.all(np.abs(counts / (d / 16) - 1) < 0.15)
    # ... while the sum comes out right.
    reveal = {i: round_.reveal(i) for i in round_.survivors}
    total, total_weight = round_.unmask(reveal)
    assert_within_bound(total, updates.sum(axis=0), quant, n)
    assert total_weight == int(weights.sum())


def test_late_input_of_a_dropped_client_stays_hidden_by_its_self_mask() -> None:
    n, d = 5, 5_000
    updates, weights = weighted_updates(n, d, seed=7)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=n)
    round_ = run_by_hand(updates, weights, quant=quant, drop_after_shares=[3])
    # Client 3 was declared dropped, yet its masked input reaches the server afterwards.
    late = masked_input(
        round_.keys[3],
        me=3,
        peers=round_.u2_adverts,
        vector=updates[2],
        weight=int(weights[2]),
        quant=quant,
        round_tag=round_.tag,
    )
    reveal = {i: round_.reveal(i) for i in round_.survivors}
    # The server rebuilds s_sk of client 3, as unmask() does, and strips every pairwise mask.
    s_sk = combine({x: int(r["s"][3], 16) for x, r in reveal.items()}, threshold=round_.threshold)
    y = decode_vector(late, length=d + 1)  # (d + 1,)
    for u in round_.survivors:
        mask = prg_uint32(
            pair_seed(s_sk, round_.keys[u].s_pk, round_tag=round_.tag, ids=(3, u)), d + 1
        )
        if u > 3:
            y -= mask
        else:
            y += mask
    stripped = dequantize_sum(y[:d], quant)
    assert abs(np.corrcoef(stripped, updates[2])[0, 1]) < 0.1
    # Control: b, which the server never gets for a dropped client, is all that still hides it.
    y -= prg_uint32(round_.keys[3].b, d + 1)
    assert np.corrcoef(dequantize_sum(y[:d], quant), updates[2])[0, 1] > 0.99


# -- client refusals and authentication --------------------------------------------------


def small_round(**kwargs: Any) -> Transcript:
    updates, weights = weighted_updates(5, 20, seed=6)
    quant = QuantConfig.fit(clip=float(np.abs(updates).max()), n_max=5)
    return run_by_hand(updates, weights, quant=quant, **kwargs)


def test_client_refuses_to_reveal_both_b_and_s_sk_of_one_client() -> None:
    round_ = small_round(drop_after_shares=[4])
    with pytest.raises(ProtocolViolation, match="both b and s_sk"):
        round_.reveal(1, survivors=[1, 2, 3, 5], dropped=[4, 5])
    with pytest.raises(ProtocolViolation, match="not a survivor"):
        round_.reveal(1, survivors=[2, 3, 5], dropped=[1, 4])
    assert set(round_.reveal(1)) == {"b", "s"}  # the honest request is answered


def test_wrong_round_tag_fails_to_decrypt() -> None:
    round_ = small_round()
    # Same client secrets, another round: its keys cannot open this round's ciphertexts.
    keys_b = {i: ClientKeys.derive(bytes([i]) * 32, round_tag="job-1/round-2") for i in range(1, 6)}
    adverts_b = {i: advertise(k) for i, k in keys_b.items()}
    with pytest.raises(DecryptionFailed):
        unmask_shares(
            keys_b[1],
            me=1,
            received=round_.inbox[1],
            peers=adverts_b,
            survivors=[1, 2, 3, 4, 5],
            dropped=[],
            round_tag="job-1/round-2",
        )
    with pytest.raises(ProtocolViolation, match="round_tag"):
        round_.reveal(1, round_tag="job-1/round-2")
    # The associated data alone, with the right key, also binds the round.
    key = bytes(32)
    with pytest.raises(DecryptionFailed):
        open_sealed(key, seal(key, b"shares", aad=b"round-1"), aad=b"round-2")


def test_tampered_or_misattributed_ciphertext_fails_to_decrypt() -> None:
    round_ = small_round()
    blob = bytearray(base64.b64decode(round_.inbox[1][2]))
    blob[-1] ^= 1
    tampered = dict(round_.inbox[1]) | {2: base64.b64encode(bytes(blob)).decode()}
    with pytest.raises(DecryptionFailed):
        round_.reveal(1, received=tampered)
    swapped = dict(round_.inbox[1]) | {2: round_.inbox[1][3], 3: round_.inbox[1][2]}
    with pytest.raises(DecryptionFailed):
        round_.reveal(1, received=swapped)
    with pytest.raises(BadEncoding):
        round_.reveal(1, received=dict(round_.inbox[1]) | {2: "not base64!"})


def test_share_keys_is_repeatable_by_a_stateless_client() -> None:
    round_ = small_round()
    again = share_keys(
        round_.keys[2],
        me=2,
        peers=round_.u2_adverts,
        threshold=round_.threshold,
        round_tag=round_.tag,
    )
    assert again[1] != round_.inbox[1][2]  # fresh AES-GCM nonce
    mixed = dict(round_.inbox[1]) | {2: again[1]}
    assert round_.reveal(1, received=mixed) == round_.reveal(1)


# -- server checks -----------------------------------------------------------------------


def test_server_detects_inconsistent_b_and_s_sk_shares() -> None:
    round_ = small_round(drop_after_shares=[5])
    reveal = {i: round_.reveal(i) for i in round_.survivors}
    for part, victim in [("b", 2), ("s", 5)]:
        bad = json.loads(json.dumps(reveal))
        share = int(bad["1"][part][str(victim)], 16)
        bad["1"][part][str(victim)] = format(share ^ 1, "0132x")
        with pytest.raises(InconsistentShares):
            round_.unmask(bad)
    # Shares that rebuild *some* 32-byte value are caught by the commitment / public key.
    other = advertise(ClientKeys.derive(bytes(32), round_tag=round_.tag))
    for field, victim, message in [("b_commit", 2, "commitment"), ("s_pk", 5, "s_pk")]:
        peers = dict(round_.u2_adverts) | {
            victim: round_.u2_adverts[victim] | {field: other[field]}
        }
        with pytest.raises(InconsistentShares, match=message):
            round_.unmask(reveal, peers=peers)
    total, _ = round_.unmask(json.loads(json.dumps(reveal)))  # the JSON form unmasks fine
    assert total.shape == (round_.d,)


def test_server_rejects_bad_encodings_and_incomplete_reveals() -> None:
    round_ = small_round()
    reveal = {i: round_.reveal(i) for i in round_.survivors}
    short = dict(round_.masked) | {1: round_.masked[1][:-8]}
    with pytest.raises(BadEncoding, match="client 1"):
        round_.unmask(reveal, masked=short)
    with pytest.raises(BadEncoding):
        round_.unmask(reveal, masked=dict(round_.masked) | {1: "%%%"})
    partial = dict(reveal) | {1: {"b": {2: reveal[1]["b"][2]}, "s": {}}}
    with pytest.raises(ProtocolViolation, match="revealed b-shares"):
        round_.unmask(partial)
    with pytest.raises(BadEncoding):
        round_.unmask(reveal, peers=dict(round_.u2_adverts) | {9: {"c_pk": "AAAA"}})
    with pytest.raises(ProtocolViolation):
        round_.unmask(reveal, masked=dict(round_.masked) | {9: round_.masked[1]})


# -- keys, quantisation, helpers ---------------------------------------------------------


def test_derive_is_deterministic_per_secret_and_round_tag() -> None:
    secret = bytes(range(32))
    a = ClientKeys.derive(secret, round_tag="r1")
    assert a == ClientKeys.derive(secret, round_tag="r1")
    b = ClientKeys.derive(secret, round_tag="r2")
    assert {a.c_sk, a.s_sk, a.b}.isdisjoint({b.c_sk, b.s_sk, b.b})
    assert len({a.c_sk, a.s_sk, a.b, a.poly_seed}) == 4
    assert ClientKeys.derive(bytes(32), round_tag="r1").s_pk != a.s_pk
    assert secret.hex() not in repr(a) and a.s_sk.hex() not in repr(a)
    with pytest.raises(BadEncoding):
        ClientKeys.derive(b"short", round_tag="r1")


def test_quant_config_refuses_settings_whose_sum_could_wrap() -> None:
    QuantConfig(clip=1.0, scale_bits=30, n_max=1)
    with pytest.raises(SecAggError, match="wrap"):
        QuantConfig(clip=1.0, scale_bits=31, n_max=1)
    with pytest.raises(SecAggError, match="wrap"):
        QuantConfig(clip=1.0, scale_bits=30, n_max=2)
    with pytest.raises(SecAggError):
        QuantConfig(clip=float("nan"), scale_bits=10, n_max=2)
    fitted = QuantConfig.fit(clip=3.0, n_max=50)
    with pytest.raises(SecAggError):
        replace(fitted, scale_bits=fitted.scale_bits + 1)
    assert fitted.error_bound(50) == 50 / (2 * fitted.scale)


@settings(max_examples=50, database=None, deadline=None)
@given(
    n=st.integers(1, 64),
    d=st.integers(1, 32),
    clip=st.floats(1e-3, 1e6),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_quantised_sum_error_within_bound(n: int, d: int, clip: float, seed: int) -> None:
    quant = QuantConfig.fit(clip=clip, n_max=n)
    x = np.random.default_rng(seed).uniform(-1.5 * clip, 1.5 * clip, size=(n, d))  # (n, d)
    total = np.zeros(d, dtype=np.uint32)
    for row in x:
        total += quantize(row, quant)
    got = dequantize_sum(total, quant)
    assert_within_bound(got, np.clip(x, -clip, clip).sum(axis=0), quant, n)


def test_masked_input_validates_weight_and_vector() -> None:
    round_ = small_round()
    kwargs: dict[str, Any] = {
        "me": 1,
        "peers": round_.u2_adverts,
        "quant": round_.quant,
        "round_tag": round_.tag,
    }
    with pytest.raises(BadEncoding):
        masked_input(round_.keys[1], vector=np.zeros(3), weight=-1, **kwargs)
    with pytest.raises(BadEncoding):
        masked_input(round_.keys[1], vector=np.array([np.nan]), weight=1, **kwargs)
    with pytest.raises(BadEncoding):
        masked_input(round_.keys[1], vector=np.zeros((2, 2)), weight=1, **kwargs)


def test_default_threshold_is_a_strict_majority() -> None:
    assert [default_threshold(n) for n in range(1, 8)] == [1, 2, 2, 3, 3, 4, 4]
    with pytest.raises(SecAggError):
        default_threshold(0)


def test_forward_shares_routes_each_ciphertext_to_its_recipient() -> None:
    as_json: Any = {"1": {"1": "a", "2": "b"}, 2: {1: "c", 2: "d"}}  # JSON keys are strings
    inbox = forward_shares(as_json)
    assert inbox == {1: {1: "a", 2: "c"}, 2: {1: "b", 2: "d"}}
    duplicate: Any = {1: {1: "a"}, "1": {2: "b"}}
    with pytest.raises(BadEncoding, match="duplicate"):
        forward_shares(duplicate)


def isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 enforces: CONSTANTS, then Classes, then functions.
    if name.isupper():
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def test_package_all_is_sorted_and_complete() -> None:
    public = {
        name
        for name, value in vars(secagg).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert secagg.__all__ == sorted(public, key=isort_key)


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(f"quackmesh.fl.secagg.{name}")
    assert module.__all__ == sorted(module.__all__, key=isort_key)
    for member in module.__all__:
        assert hasattr(module, member)
