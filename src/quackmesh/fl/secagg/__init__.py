"""Secure aggregation: the server learns the sum of the clients' updates and nothing else.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
CCS'17 — the semi-honest-server protocol with dropout recovery (Figure 4): pairwise masks
from X25519 key agreement cancel in the sum, a self-mask stops the server from unmasking a
late client, and t-of-n Shamir shares of both let the survivors remove the masks of
clients that drop out. SecAgg+ neighbourhoods (Bell et al., CCS'20) are not implemented:
every client pairs with every other, O(n**2) mask expansions per round.

Modules: :mod:`.shamir` (secret sharing), :mod:`.crypto` (X25519, HKDF, AES-GCM, ChaCha20
PRG), :mod:`.quantize` (floats to Z_(2**32) and back, error bound), :mod:`.wire` (encodings,
key schedule), :mod:`.client` / :mod:`.server` (the steps), :mod:`.protocol` (the round,
:func:`simulate_round`), :mod:`.errors` (:class:`SecAggError`, a ValueError).

Security notes
--------------
* **Threat model: a semi-honest (honest-but-curious) server**, and any fewer than t clients
  colluding with it. An actively malicious server could lie about who dropped out; the
  paper's signed consistency-check round against that is not implemented, and a client's
  refusal to reveal both b and s_sk of one client holds only within one request (clients
  are stateless: the caller must answer each round's unmask request at most once).
* The coordinator only ever sees adverts, ciphertexts it cannot open, masked vectors that
  are uniform over Z_(2**32), the shares needed to remove masks, and the final sum.
* Masking composes only with **mean-based strategies** (FedAvg, FedProx, FedAdam, FedYogi:
  anything computed from ``sum(w_i * x_i) / sum(w_i)``). Robust aggregators (Krum,
  coordinate-wise median, trimmed mean) need each individual update, which is exactly what
  secure aggregation exists to hide.
* With **differential privacy**, clients must clip (and, for local/distributed DP, add
  noise) *before* masking: the server cannot clip what it cannot see. The quantiser's clip
  range is not a DP clip; set it at or above the DP clip norm.
* ``round_tag`` must be unique per round; masks reused across rounds leak differences.
"""

from __future__ import annotations

from quackmesh.fl.secagg.errors import (
    BadEncoding,
    DecryptionFailed,
    InconsistentShares,
    ProtocolViolation,
    SecAggError,
    TooFewParticipants,
)
from quackmesh.fl.secagg.protocol import (
    ClientKeys,
    advertise,
    default_threshold,
    forward_shares,
    masked_input,
    share_keys,
    simulate_round,
    unmask,
    unmask_shares,
)
from quackmesh.fl.secagg.quantize import (
    QuantConfig,
    decode_vector,
    dequantize_sum,
    encode_vector,
    quantize,
)

__all__ = [
    "BadEncoding",
    "ClientKeys",
    "DecryptionFailed",
    "InconsistentShares",
    "ProtocolViolation",
    "QuantConfig",
    "SecAggError",
    "TooFewParticipants",
    "advertise",
    "decode_vector",
    "default_threshold",
    "dequantize_sum",
    "encode_vector",
    "forward_shares",
    "masked_input",
    "quantize",
    "share_keys",
    "simulate_round",
    "unmask",
    "unmask_shares",
]
