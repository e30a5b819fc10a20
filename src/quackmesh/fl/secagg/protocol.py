"""The secure aggregation round: client and server steps, and an in-process simulation.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS'17, Figure 4 (semi-honest server, with dropout recovery). The client sets are the
paper's: U1 advertised keys, U2 sent shares, U3 sent a masked input, U4 revealed shares.

=====================  ===========================  ===========================================
step                   each client                  server
=====================  ===========================  ===========================================
0 AdvertiseKeys        ``advertise(keys)``          send every advert of U1 to all of U1
1 ShareKeys            ``share_keys(...)``          ``forward_shares`` among U2 (>= t)
2 MaskedInputCollect   ``masked_input(...)``        collect U3 (>= t); send U3 and U2 \\ U3
3 Unmasking            ``unmask_shares(...)``       ``unmask(...)`` from >= t reveals (U4)
=====================  ===========================  ===========================================

The client steps live in :mod:`.client`, the server steps in :mod:`.server`; they are
re-exported here with :func:`simulate_round`, which runs all of them in one process.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt

from quackmesh.fl.secagg.client import (
    ClientKeys,
    advertise,
    masked_input,
    share_keys,
    unmask_shares,
)
from quackmesh.fl.secagg.errors import SecAggError
from quackmesh.fl.secagg.quantize import QuantConfig
from quackmesh.fl.secagg.server import default_threshold, forward_shares, unmask

__all__ = [
    "ClientKeys",
    "advertise",
    "default_threshold",
    "forward_shares",
    "masked_input",
    "share_keys",
    "simulate_round",
    "unmask",
    "unmask_shares",
]


def _wire(value: Any) -> Any:
    # Everything a party sends goes through JSON, as it would between machines.
    return json.loads(json.dumps(value))


def simulate_round(
    updates: npt.ArrayLike,
    weights: npt.ArrayLike,
    *,
    quant: QuantConfig,
    seed: int = 0,
    threshold: int | None = None,
    drop_after_advertise: Collection[int] = (),
    drop_after_shares: Collection[int] = (),
    drop_after_masking: Collection[int] = (),
) -> tuple[npt.NDArray[np.float64], int]:
    """Run one full round in-process and return ``unmask``'s ``(sum, total_weight)``.

    ``updates`` ``(n, n_params)``: row i is what client ``i + 1`` masks — its update
    already multiplied by its weight; ``weights`` ``(n,)``: integer example counts. Client
    ids are ``1..n``; ``threshold`` defaults to :func:`default_threshold`. Clients in
    ``drop_after_advertise`` send no shares (not in U2), those in ``drop_after_shares``
    no masked input (in U2, not U3), those in ``drop_after_masking`` no reveal (in U3,
    not U4). The result is the sum over U3, within ``quant.error_bound(len(U3))``.
    Messages are passed through JSON; secrets come from ``np.random.default_rng(seed)``.
    """
    x = np.asarray(updates, dtype=np.float64)  # (n, n_params)
    w = np.asarray(weights)  # (n,)
    if x.ndim != 2 or w.shape != (x.shape[0],) or not np.issubdtype(w.dtype, np.integer):
        raise SecAggError(f"need updates (n, d) and integer weights (n,), got {x.shape}, {w.shape}")
    n, d = x.shape
    ids = list(range(1, n + 1))
    for name, group in [
        ("drop_after_advertise", drop_after_advertise),
        ("drop_after_shares", drop_after_shares),
        ("drop_after_masking", drop_after_masking),
    ]:
        if not set(group) <= set(ids):
            raise SecAggError(f"{name} must hold ids in 1..{n}, got {sorted(group)}")
    t = default_threshold(n) if threshold is None else threshold
    tag = f"simulate/{seed}"
    rng = np.random.default_rng(seed)
    keys = {i: ClientKeys.derive(rng.bytes(32), round_tag=tag) for i in ids}

    u1 = {i: _wire(advertise(keys[i])) for i in ids}
    u2 = [i for i in ids if i not in drop_after_advertise]
    outgoing = {
        i: _wire(share_keys(keys[i], me=i, peers=_wire(u1), threshold=t, round_tag=tag)) for i in u2
    }
    u2_adverts = _wire({i: u1[i] for i in u2})
    # Each client in U2 receives only the ciphertexts of senders in U2.
    inbox = _wire(forward_shares(_wire(outgoing)))
    u3 = [i for i in u2 if i not in drop_after_shares]
    masked = {
        i: masked_input(
            keys[i],
            me=i,
            peers=u2_adverts,
            vector=x[i - 1],
            weight=int(w[i - 1]),
            quant=quant,
            round_tag=tag,
        )
        for i in u3
    }
    dropped = [i for i in u2 if i not in u3]
    reveal = {
        i: _wire(
            unmask_shares(
                keys[i],
                me=i,
                received=inbox[str(i)],
                peers=u2_adverts,
                survivors=u3,
                dropped=dropped,
                round_tag=tag,
            )
        )
        for i in u3
        if i not in drop_after_masking
    }
    return unmask(
        masked=_wire(masked),
        reveal=_wire(reveal),
        peers=u2_adverts,
        threshold=t,
        quant=quant,
        n_params=d,
        round_tag=tag,
    )
