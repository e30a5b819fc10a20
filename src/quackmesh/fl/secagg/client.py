"""Client steps of secure aggregation (Bonawitz et al., CCS'17, Figure 4, semi-honest).

A client keeps no state between steps: :meth:`ClientKeys.derive` re-creates every secret
from the client's 32-byte secret and the round tag, and its Shamir polynomials are seeded
from them, so a repeated step sends the same shares. See :mod:`.protocol` for the round.

Masked vectors have ``n_params + 1`` words: the quantised weighted update, then the
client's integer weight (its number of examples). The server thus learns the exact total
weight for ``sum / total_weight``, while each client's own weight stays masked like the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quackmesh.fl.secagg.crypto import (
    b64decode,
    b64encode,
    hkdf,
    open_sealed,
    prg_uint32,
    private_key,
    public_key,
    seal,
)
from quackmesh.fl.secagg.errors import BadEncoding, ProtocolViolation, TooFewParticipants
from quackmesh.fl.secagg.quantize import QuantConfig, encode_vector, quantize
from quackmesh.fl.secagg.shamir import SHARE_BYTES, split
from quackmesh.fl.secagg.wire import (
    Advert,
    IdMap,
    by_id,
    commit,
    ids_of,
    info,
    pair_seed,
    parse_adverts,
    share_aad,
    share_key,
)

__all__ = [
    "ClientKeys",
    "advertise",
    "masked_input",
    "share_keys",
    "unmask_shares",
]

_PAYLOAD_BYTES = 2 + 2 * SHARE_BYTES  # threshold (u16) || s_sk share || b share


@dataclass(frozen=True, repr=False)
class ClientKeys:
    """One client's secrets for one round (raw 32-byte X25519 secrets and seeds)."""

    round_tag: str
    c_sk: bytes  # agrees the keys that encrypt Shamir shares
    c_pk: bytes
    s_sk: bytes  # agrees the pairwise mask seeds s_uv
    s_pk: bytes
    b: bytes  # self-mask seed
    poly_seed: bytes  # seeds the Shamir polynomials

    @classmethod
    def derive(cls, client_secret: bytes, *, round_tag: str) -> ClientKeys:
        """Derive every secret from ``client_secret`` (32 bytes, one per client).

        ``round_tag`` must be unique per round (e.g. ``"job-17/round-3"``): reusing it
        reuses the masks, and two masked inputs would then reveal the updates' difference.
        """
        if not isinstance(client_secret, bytes) or len(client_secret) != 32:
            raise BadEncoding("client_secret must be 32 bytes")
        if not isinstance(round_tag, str) or not round_tag:
            raise BadEncoding("round_tag must be a non-empty string")
        sub = {
            label: hkdf(client_secret, info=info(f"derive/{label}", round_tag))
            for label in ("c_sk", "s_sk", "b", "poly")
        }
        return cls(
            round_tag=round_tag,
            c_sk=sub["c_sk"],
            c_pk=public_key(sub["c_sk"]),
            s_sk=sub["s_sk"],
            s_pk=public_key(sub["s_sk"]),
            b=sub["b"],
            poly_seed=sub["poly"],
        )

    def __repr__(self) -> str:  # never print the secrets
        return f"ClientKeys(round_tag={self.round_tag!r}, s_pk={b64encode(self.s_pk)!r})"


def _parse_and_check(
    keys: ClientKeys, *, me: int, peers: IdMap[Mapping[str, str]], round_tag: str
) -> dict[int, Advert]:
    if keys.round_tag != round_tag:
        raise ProtocolViolation("keys were derived for another round_tag", round_tag=round_tag)
    adverts = parse_adverts(peers)
    mine = adverts.get(me)
    if mine is None or (mine.c_pk, mine.s_pk) != (keys.c_pk, keys.s_pk):
        raise ProtocolViolation(f"peers do not hold client {me}'s own keys", me=me)
    return adverts


def advertise(keys: ClientKeys) -> dict[str, str]:
    """Step 0: ``{"c_pk", "s_pk", "b_commit"}``, base64 of 32 bytes each.

    ``b_commit`` is sha256 of the self-mask seed b; the server checks a reconstructed b
    against it, which catches inconsistent b-shares.
    """
    return {
        "c_pk": b64encode(keys.c_pk),
        "s_pk": b64encode(keys.s_pk),
        "b_commit": b64encode(commit(keys.b)),
    }


def share_keys(
    keys: ClientKeys,
    *,
    me: int,
    peers: IdMap[Mapping[str, str]],
    threshold: int,
    round_tag: str,
) -> dict[int, str]:
    """Step 1: t-of-n Shamir shares of s_sk and b, encrypted to every peer (``me`` too).

    ``peers`` are the adverts of U1, ``me`` included. Returns ``{recipient id:
    base64(nonce || AES-GCM(threshold u16 || s_share || b_share))}``, 66-byte big-endian
    shares, with the round tag, sender and recipient as associated data.
    """
    adverts = _parse_and_check(keys, me=me, peers=peers, round_tag=round_tag)
    xs = sorted(adverts)
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise BadEncoding(f"threshold must be an int, got {threshold!r}")
    if not 1 <= threshold <= len(xs):
        raise TooFewParticipants(f"threshold {threshold} not in [1, {len(xs)}]", t=threshold)
    s_shares = split(keys.s_sk, threshold=threshold, xs=xs, seed=keys.poly_seed + b"/s")
    b_shares = split(keys.b, threshold=threshold, xs=xs, seed=keys.poly_seed + b"/b")
    c_sk = private_key(keys.c_sk)
    out: dict[int, str] = {}
    for v in xs:
        payload = (
            threshold.to_bytes(2, "big")
            + s_shares[v].to_bytes(SHARE_BYTES, "big")
            + b_shares[v].to_bytes(SHARE_BYTES, "big")
        )
        key = share_key(c_sk, adverts[v].c_pk, round_tag=round_tag, ids=(me, v))
        out[v] = b64encode(seal(key, payload, aad=share_aad(round_tag, me, v)))
    return out


def masked_input(
    keys: ClientKeys,
    *,
    me: int,
    peers: IdMap[Mapping[str, str]],
    vector: npt.ArrayLike,
    weight: int,
    quant: QuantConfig,
    round_tag: str,
) -> str:
    """Step 2: base64 of ``[quantize(vector), weight] + PRG(b) ± PRG(s_uv)`` mod 2**32.

    ``vector`` ``(n_params,)`` is the *weighted* update (already multiplied by ``weight``);
    ``peers`` are the adverts of U2 (the clients whose shares the server forwarded). The
    mask shared with v is added when ``me < v`` and subtracted when ``me > v``, so every pair
    cancels in the sum. ``quantize.decode_vector`` reads the result back.
    """
    adverts = _parse_and_check(keys, me=me, peers=peers, round_tag=round_tag)
    if len(adverts) > quant.n_max:
        raise ProtocolViolation(f"{len(adverts)} clients exceed quant.n_max={quant.n_max}")
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer):
        raise BadEncoding(f"weight must be an int, got {weight!r}")
    if not 0 <= int(weight) <= quant.max_weight:
        raise BadEncoding(f"weight {weight} not in [0, {quant.max_weight}]")
    words = quantize(vector, quant)  # (n_params,)
    acc = np.append(words, np.uint32(int(weight)))  # (n_params + 1,)
    acc += prg_uint32(keys.b, acc.size)
    s_sk = private_key(keys.s_sk)
    for v, advert in adverts.items():
        if v == me:
            continue
        seed = pair_seed(s_sk, advert.s_pk, round_tag=round_tag, ids=(me, v))
        if me < v:
            acc += prg_uint32(seed, acc.size)
        else:
            acc -= prg_uint32(seed, acc.size)
    return encode_vector(acc)


def unmask_shares(
    keys: ClientKeys,
    *,
    me: int,
    received: IdMap[str],
    peers: IdMap[Mapping[str, str]],
    survivors: Sequence[int],
    dropped: Sequence[int],
    round_tag: str,
) -> dict[str, dict[int, str]]:
    """Step 3: reveal the b-shares of ``survivors`` (U3) and s_sk-shares of ``dropped``.

    ``received`` holds the ciphertexts addressed to ``me`` (``{sender: ct}``). Returns
    ``{"b": {u: hex}, "s": {v: hex}}``. Refuses with :class:`ProtocolViolation` a client
    listed as both survivor and dropped (its b and s_sk would unmask its input), ``me`` not
    among the survivors, or a sender without shares; :class:`TooFewParticipants` if the
    survivors are fewer than a sender's threshold (the sum would expose too few inputs).
    A stateless client can refuse only within one call, so the caller must answer a
    round's unmask request at most once.
    """
    adverts = _parse_and_check(keys, me=me, peers=peers, round_tag=round_tag)
    alive, gone = ids_of(survivors, what="survivors"), ids_of(dropped, what="dropped")
    both = sorted(set(alive) & set(gone))
    if both:
        raise ProtocolViolation(f"refusing to reveal both b and s_sk of clients {both}")
    if me not in alive:
        raise ProtocolViolation(f"client {me} sent its masked input but is not a survivor")
    cts = by_id(received, what="received")
    c_sk = private_key(keys.c_sk)
    payloads: dict[int, bytes] = {}
    for u in alive + gone:
        if u not in cts or u not in adverts:
            raise ProtocolViolation(f"no shares or keys from client {u}", client=u)
        key = share_key(c_sk, adverts[u].c_pk, round_tag=round_tag, ids=(u, me))
        blob = b64decode(cts[u], what=f"ciphertext from client {u}")
        payloads[u] = open_sealed(key, blob, aad=share_aad(round_tag, u, me))
        if len(payloads[u]) != _PAYLOAD_BYTES:
            raise BadEncoding(f"share payload from client {u} has the wrong length")
    needed = max(int.from_bytes(p[:2], "big") for p in payloads.values())
    if len(alive) < needed:
        raise TooFewParticipants(f"{len(alive)} survivors, below threshold {needed}", t=needed)
    return {
        "b": {u: payloads[u][2 + SHARE_BYTES :].hex() for u in alive},
        "s": {v: payloads[v][2 : 2 + SHARE_BYTES].hex() for v in gone},
    }
