"""Server steps of secure aggregation (Bonawitz et al., CCS'17, Figure 4, semi-honest).

The server routes share ciphertexts it cannot read (:func:`forward_shares`), then, from at
least t clients' reveals, rebuilds each survivor's self-mask seed b and each dropped
client's mask key s_sk, strips those masks from the sum of the masked inputs and
dequantises it (:func:`unmask`). It never learns an individual update: it holds b *or*
s_sk of a client, never both (:func:`.client.unmask_shares` enforces this per request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from quackmesh.fl.secagg.crypto import prg_uint32, private_key
from quackmesh.fl.secagg.errors import (
    BadEncoding,
    InconsistentShares,
    ProtocolViolation,
    SecAggError,
    TooFewParticipants,
)
from quackmesh.fl.secagg.quantize import QuantConfig, decode_vector, dequantize_sum
from quackmesh.fl.secagg.shamir import PRIME, lagrange_coefficients
from quackmesh.fl.secagg.wire import (
    IdMap,
    by_id,
    commit,
    pair_seed,
    parse_adverts,
    parse_share,
)

__all__ = [
    "default_threshold",
    "forward_shares",
    "unmask",
]


def default_threshold(n: int) -> int:
    """Shamir threshold ``t = n // 2 + 1`` for ``n`` clients: a strict majority.

    t clients together can unmask anyone, so the server must corrupt a majority to learn
    one client's input, and up to ``n - t`` clients may drop out. For n >= 3, t >= 2; with
    n < 3 secure aggregation hides little anyway (each client knows its own update).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SecAggError(f"need at least one client, got {n!r}")
    return n // 2 + 1


def forward_shares(outgoing: IdMap[IdMap[str]]) -> dict[int, dict[int, str]]:
    """Step 1 routing: ``{sender: {recipient: ct}}`` to ``{recipient: {sender: ct}}``."""
    inbox: dict[int, dict[int, str]] = {}
    for sender, cts in by_id(outgoing, what="outgoing shares").items():
        for recipient, ct in by_id(cts, what=f"shares of client {sender}").items():
            inbox.setdefault(recipient, {})[sender] = ct
    return inbox


def _reveal_shares(
    reveal: Mapping[str, Any], *, revealer: int, part: str, expected: list[int]
) -> dict[int, int]:
    if not isinstance(reveal, Mapping):
        raise BadEncoding(f"reveal of client {revealer} must be an object", client=revealer)
    shares = by_id(reveal.get(part, {}), what=f"{part}-shares of client {revealer}")
    if sorted(shares) != expected:
        raise ProtocolViolation(
            f"client {revealer} revealed {part}-shares for {sorted(shares)}, expected {expected}",
            client=revealer,
        )
    return {
        cid: parse_share(text, what=f"{part}-share of {cid} from {revealer}")
        for cid, text in shares.items()
    }


def _interpolate(coefficients: list[int], ys: list[int], *, what: str) -> bytes:
    secret = sum(lam * y for lam, y in zip(coefficients, ys, strict=True)) % PRIME
    if secret >= 1 << 256:
        raise InconsistentShares(f"shares of {what} do not reconstruct a 32-byte secret")
    return secret.to_bytes(32, "big")


def unmask(
    *,
    masked: IdMap[str],
    reveal: IdMap[Mapping[str, Any]],
    peers: IdMap[Mapping[str, str]],
    threshold: int,
    quant: QuantConfig,
    n_params: int,
    round_tag: str,
) -> tuple[npt.NDArray[np.float64], int]:
    """Step 3: the dequantised sum ``(n_params,)`` of the survivors and their total weight.

    ``masked``: ``{u: masked_input(...)}`` for U3; ``reveal``: ``{u: unmask_shares(...)}``
    from at least ``threshold`` survivors (the first ``threshold`` by id are used);
    ``peers``: the adverts of U2 (clients in U2 but not in ``masked`` are the dropped).
    Raises :class:`TooFewParticipants`, :class:`InconsistentShares` (a rebuilt b that
    misses its commitment, or s_sk that misses its public key), :class:`BadEncoding`.
    """
    adverts = parse_adverts(peers)
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 1:
        raise BadEncoding(f"n_params must be a positive int, got {n_params!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise BadEncoding(f"threshold must be an int, got {threshold!r}")
    if not 1 <= threshold <= len(adverts):
        raise ProtocolViolation(f"threshold {threshold} not in [1, {len(adverts)}]")
    vectors = by_id(masked, what="masked inputs")
    survivors = sorted(vectors)
    strangers = sorted(set(survivors) - set(adverts))
    if strangers:
        raise ProtocolViolation(f"masked inputs from clients {strangers} outside U2")
    dropped = sorted(set(adverts) - set(survivors))
    if len(survivors) < threshold:
        raise TooFewParticipants(
            f"{len(survivors)} masked inputs, below threshold {threshold}", t=threshold
        )
    if len(survivors) > quant.n_max:
        raise ProtocolViolation(f"{len(survivors)} inputs exceed quant.n_max={quant.n_max}")
    reveals = by_id(reveal, what="reveals")
    outsiders = sorted(set(reveals) - set(survivors))
    if outsiders:
        raise ProtocolViolation(f"reveals from clients {outsiders} that sent no masked input")
    if len(reveals) < threshold:
        raise TooFewParticipants(f"{len(reveals)} reveals, below threshold {threshold}")
    used = sorted(reveals)[:threshold]
    b_shares = {
        x: _reveal_shares(reveals[x], revealer=x, part="b", expected=survivors) for x in used
    }
    s_shares = {x: _reveal_shares(reveals[x], revealer=x, part="s", expected=dropped) for x in used}
    lam = lagrange_coefficients(used)  # same points for every secret: computed once

    size = n_params + 1  # the weight rides in the last word
    total = np.zeros(size, dtype=np.uint32)  # (n_params + 1,), wraps mod 2**32
    for u in survivors:
        try:
            total += decode_vector(vectors[u], length=size)
        except BadEncoding as exc:
            raise BadEncoding(f"masked input of client {u}: {exc}", client=u) from exc
    for u in survivors:
        b = _interpolate(lam, [b_shares[x][u] for x in used], what=f"b of client {u}")
        if commit(b) != adverts[u].b_commit:
            raise InconsistentShares(f"rebuilt b of client {u} misses its commitment", client=u)
        total -= prg_uint32(b, size)
    for v in dropped:
        s_sk = _interpolate(lam, [s_shares[x][v] for x in used], what=f"s_sk of client {v}")
        sk = private_key(s_sk)
        if sk.public_key().public_bytes_raw() != adverts[v].s_pk:
            raise InconsistentShares(f"rebuilt s_sk of client {v} misses its s_pk", client=v)
        for u in survivors:
            seed = pair_seed(sk, adverts[u].s_pk, round_tag=round_tag, ids=(u, v))
            mask = prg_uint32(seed, size)
            # survivor u added +mask if u < v and -mask if u > v: take it back out
            if u < v:
                total -= mask
            else:
                total += mask
    return dequantize_sum(total[:-1], quant), int(total[-1])
