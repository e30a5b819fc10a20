"""The coordinator's side of secure aggregation: what each round task asks a node, how
answers are checked, and the unmasking of the sum (Bonawitz et al. 2017; the maths is in
:mod:`quackmesh.fl.secagg`).

Client sets (the paper's names): U1 advertised keys, U2 sent encrypted shares (``shares``
not empty), U3 sent a masked update (``update_sha`` set). A masked update is the client's
update times its weight — its example count, capped at ``weight_cap``, or 1 under DP
(clipped updates, equal weights) — quantised with a clip of ``SECAGG_CLIP`` per
coordinate of the (unweighted) update; the weight itself rides along as a masked last
coordinate, so the coordinator learns the total weight and nothing about any one client.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from quackmesh.coordinator.db.models import FlClient, FlRun

if TYPE_CHECKING:
    from quackmesh.coordinator.runtime import Runtime
    from quackmesh.fl.secagg import QuantConfig
    from quackmesh.fl.spec import FlTrainSpec

__all__ = [
    "SECAGG_CLIP",
    "record_answer",
    "step_params",
    "threshold_for",
    "train_secagg",
    "unmask_sum",
]

SECAGG_CLIP = 1.0  # per-coordinate bound on a client's (unweighted) delta under masking
WEIGHT_CAP = 10_000  # examples counted per client under secure aggregation


def _tag(run: FlRun) -> str:
    return f"{run.job_id}/{run.round}/{run.retries}"


def threshold_for(clients: list[FlClient]) -> int:
    """Shamir threshold t for the round: a strict majority of the selected clients."""
    from quackmesh.fl.secagg import default_threshold

    return default_threshold(max(1, len(clients)))


def _keys(clients: list[FlClient]) -> dict[str, Any]:
    return {str(c.client_id): c.keys for c in clients if c.keys}


def _quant(spec: FlTrainSpec, clients: list[FlClient]) -> QuantConfig:
    from quackmesh.fl.secagg import QuantConfig

    cap = 1 if spec.dp is not None else WEIGHT_CAP
    clip = spec.dp.clip_norm if spec.dp is not None else SECAGG_CLIP
    return QuantConfig.fit(clip=clip * cap, n_max=max(1, len(clients)))


def _quant_json(q: QuantConfig) -> dict[str, Any]:
    return {"clip": q.clip, "scale_bits": q.scale_bits, "n_max": q.n_max}


def step_params(
    phase: str, *, run: FlRun, client: FlClient, clients: list[FlClient], spec: FlTrainSpec
) -> dict[str, Any]:
    """The params of an ``fl.secagg`` task for ``client`` in ``phase``."""
    base: dict[str, Any] = {"phase": phase, "round_tag": _tag(run)}
    if phase == "advertise":
        return base
    if phase == "shares":
        advertised = [c for c in clients if c.keys]
        return {
            **base,
            "me": client.client_id,
            "peers": _keys(advertised),
            "threshold": threshold_for(clients),
        }
    if phase == "unmask":
        u2 = [c for c in clients if c.shares]
        u3 = [c for c in u2 if c.update_sha is not None]
        me = str(client.client_id)
        return {
            **base,
            "me": client.client_id,
            "received": {str(u.client_id): u.shares[me] for u in u2 if me in u.shares},
            "peers": _keys(u2),
            "survivors": [c.client_id for c in u3],
            "dropped": [c.client_id for c in u2 if c.update_sha is None],
        }
    raise ValueError(f"no secure-aggregation step {phase!r}")


def train_secagg(
    *, run: FlRun, client: FlClient, clients: list[FlClient], spec: FlTrainSpec
) -> dict[str, Any]:
    """The ``secagg`` block of a masked training task (the node agent applies it)."""
    u2 = [c for c in clients if c.shares]
    return {
        "round_tag": _tag(run),
        "me": client.client_id,
        "peers": _keys(u2),
        "quant": _quant_json(_quant(spec, clients)),
        "weight": "uniform" if spec.dp is not None else "examples",
        "weight_cap": 1 if spec.dp is not None else WEIGHT_CAP,
    }


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if np.isfinite(value) else None


def record_answer(phase: str, *, client: FlClient, output: Any, spec: FlTrainSpec) -> None:
    """Check a node's answer for ``phase`` and record it; ``ValueError`` if malformed."""
    if not isinstance(output, dict):
        raise ValueError("answer must be a JSON object")
    if phase == "advertise":
        if set(output) != {"c_pk", "s_pk", "b_commit"} or not all(
            isinstance(v, str) and len(v) < 100 for v in output.values()
        ):
            raise ValueError("advert must hold c_pk, s_pk and b_commit strings")
        client.keys = dict(output)
    elif phase == "shares":
        if not output or not all(
            isinstance(k, str) and k.isdigit() and isinstance(v, str) and len(v) < 1000
            for k, v in output.items()
        ):
            raise ValueError("shares must map client ids to ciphertexts")
        client.shares = dict(output)
    elif phase == "unmask":
        if set(output) - {"b", "s"}:
            raise ValueError("reveal must hold only 'b' and 's' shares")
        client.reveal = dict(output)
    elif phase == "train":
        _record_update(client, output, spec)
    else:
        raise ValueError(f"unknown phase {phase!r}")


def _record_update(client: FlClient, output: dict[str, Any], spec: FlTrainSpec) -> None:
    from quackmesh.coordinator.fl.aggregate import decode_update
    from quackmesh.core.errors import ValidationFailed
    from quackmesh.fl.zoo import count_params

    if spec.secure_aggregation:
        from quackmesh.fl.secagg import decode_vector

        if not isinstance(output.get("masked"), str):
            raise ValueError("a masked update needs 'masked'")
        decode_vector(output["masked"], length=count_params(spec.model) + 1)
        client.n_examples = 0  # hidden by secure aggregation
    else:
        try:
            _, n = decode_update(output, spec)
        except ValidationFailed as exc:
            raise ValueError(str(exc)) from exc
        client.n_examples = n
    client.loss = _finite(output.get("loss"))
    client.fed_loss = _finite(output.get("fed_loss"))
    client.fed_accuracy = _finite(output.get("fed_accuracy"))


def unmask_sum(
    rt: Runtime, *, run: FlRun, clients: list[FlClient], spec: FlTrainSpec
) -> tuple[npt.NDArray[np.float64], int]:
    """Remove the masks: the sum of the U3 clients' weighted updates and their weight."""
    from quackmesh.fl.secagg import unmask
    from quackmesh.fl.zoo import count_params

    u2 = [c for c in clients if c.shares]
    u3 = [c for c in u2 if c.update_sha is not None]
    masked = {
        c.client_id: json.loads(rt.blobs.path_for(c.update_sha or "").read_bytes())["masked"]
        for c in u3
    }
    reveal = {c.client_id: c.reveal for c in u3 if c.reveal}
    total, weight = unmask(
        masked=masked,
        reveal=reveal,
        peers=_keys(u2),
        threshold=threshold_for(clients),
        quant=_quant(spec, clients),
        n_params=count_params(spec.model),
        round_tag=_tag(run),
    )
    return total, weight
