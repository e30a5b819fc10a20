"""Fixed-point quantisation of float vectors into Z_(2**32) for secure aggregation.

Bonawitz et al., CCS'17, §3 and §6.1 mask vectors of integers mod R; model updates are
floats, so each client maps them into Z_(2**32) first, and the server maps the *sum* back:

* **clip** each coordinate to ``[-clip, clip]`` (values outside are saturated: choose
  ``clip`` above the largest weighted update coordinate, or clip on purpose, e.g. for DP);
* **scale** by ``2**scale_bits`` and round to the nearest integer (ties to even);
* store the signed integer in two's complement mod 2**32.

:class:`QuantConfig` refuses any setting where ``n_max * ceil(clip * 2**scale_bits) >=
2**31``, so the sum of up to ``n_max`` clients always lies in ``[-2**31, 2**31)`` and its
residue mod 2**32 decodes to the exact integer sum: modular masking never wraps a result.

**Error bound.** Scaling by a power of two is exact in float64, and integer sums are exact,
so each coordinate of :func:`dequantize_sum` differs from the float sum of the *clipped*
inputs by at most ``n / (2 * 2**scale_bits)`` for ``n`` clients (``error_bound(n)``): one
rounding of at most half a step per client, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quackmesh.fl.secagg.errors import BadEncoding, SecAggError

__all__ = [
    "QuantConfig",
    "decode_vector",
    "dequantize_sum",
    "encode_vector",
    "quantize",
]

_HALF = 2**31


@dataclass(frozen=True)
class QuantConfig:
    """How floats become integers mod 2**32 (invalid settings raise :class:`SecAggError`).

    ``clip``: coordinates are clipped to ``[-clip, clip]`` before scaling (> 0, finite).
    ``scale_bits``: the scale is ``2**scale_bits`` (may be negative for huge ranges).
    ``n_max``: the most clients whose sum must not wrap; also bounds each client's integer
    weight by :attr:`max_weight` so the total weight (the extra last coordinate) fits too.
    """

    clip: float
    scale_bits: int
    n_max: int

    def __post_init__(self) -> None:
        if not isinstance(self.clip, int | float) or not math.isfinite(self.clip):
            raise SecAggError(f"clip must be a finite number, got {self.clip!r}")
        if self.clip <= 0:
            raise SecAggError(f"clip must be positive, got {self.clip!r}")
        for name in ("scale_bits", "n_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise SecAggError(f"{name} must be an int, got {value!r}")
        if not -64 <= self.scale_bits <= 64:
            raise SecAggError(f"scale_bits must be in [-64, 64], got {self.scale_bits}")
        if self.n_max < 1:
            raise SecAggError(f"n_max must be at least 1, got {self.n_max}")
        if self.n_max * self.step_limit >= _HALF:
            raise SecAggError(
                f"n_max * clip * 2**scale_bits = {self.n_max} * {self.step_limit} >= 2**31: "
                "the sum could wrap mod 2**32; lower scale_bits, clip or n_max"
            )

    @property
    def scale(self) -> float:
        """The fixed-point scale ``2**scale_bits``."""
        return 2.0**self.scale_bits

    @property
    def step_limit(self) -> int:
        """The largest magnitude one quantised coordinate can take."""
        return max(1, math.ceil(self.clip * self.scale))

    @property
    def max_weight(self) -> int:
        """The largest integer weight one client may send (``n_max`` of them fit 32 bits)."""
        return (2**32 - 1) // self.n_max

    def error_bound(self, n: int) -> float:
        """Per-coordinate bound on ``|dequantised sum - sum of clipped inputs|`` for n clients."""
        return n / (2.0 * self.scale)

    @classmethod
    def fit(cls, *, clip: float, n_max: int) -> QuantConfig:
        """The finest power-of-two scale for which ``n_max`` clients cannot wrap."""
        if not (math.isfinite(clip) and clip > 0) or n_max < 1:
            raise SecAggError(f"need a positive finite clip and n_max >= 1, got {clip}, {n_max}")
        bits = math.floor(math.log2((_HALF - 1) / (n_max * clip)))
        while bits > -64 and n_max * max(1, math.ceil(clip * 2.0**bits)) >= _HALF:
            bits -= 1
        return cls(clip=float(clip), scale_bits=min(bits, 64), n_max=n_max)


def quantize(vector: npt.ArrayLike, quant: QuantConfig) -> npt.NDArray[np.uint32]:
    """Clip, scale and round a float vector into two's complement mod 2**32.

    Raises :class:`BadEncoding` unless ``vector`` is one-dimensional and finite.
    """
    x = np.asarray(vector, dtype=np.float64)  # (n_params,)
    if x.ndim != 1:
        raise BadEncoding(f"vector must be one-dimensional, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise BadEncoding("vector has NaN or infinite entries")
    q = np.rint(np.clip(x, -quant.clip, quant.clip) * quant.scale)
    # |q| <= step_limit < 2**31, so int32 holds it and its bits are the residue mod 2**32.
    return q.astype(np.int32).view(np.uint32)


def dequantize_sum(total: npt.NDArray[np.uint32], quant: QuantConfig) -> npt.NDArray[np.float64]:
    """Map a sum of quantised vectors (mod 2**32) back to floats (see the error bound)."""
    words = np.ascontiguousarray(total, dtype=np.uint32)  # (n_params,)
    return words.view(np.int32).astype(np.float64) / quant.scale


def encode_vector(words: npt.NDArray[np.uint32]) -> str:
    """Wire form of a uint32 vector: base64 of its little-endian bytes."""
    return base64.b64encode(np.asarray(words, dtype="<u4").tobytes()).decode("ascii")


def decode_vector(text: object, *, length: int) -> npt.NDArray[np.uint32]:
    """Inverse of :func:`encode_vector`; :class:`BadEncoding` unless ``length`` words."""
    if not isinstance(text, str):
        raise BadEncoding(f"masked vector must be a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadEncoding("masked vector is not valid base64") from exc
    if len(raw) != 4 * length:
        raise BadEncoding(
            f"masked vector has {len(raw)} bytes, expected {4 * length} ({length} words)",
            length=len(raw),
        )
    return np.frombuffer(raw, dtype="<u4").astype(np.uint32)  # (length,), writable copy
