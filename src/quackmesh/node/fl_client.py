"""The node's side of federated rounds, outside the sandbox.

* :func:`secagg_step` answers secure-aggregation steps (advertise keys, encrypted Shamir
  shares, unmasking shares) from the node's secret and the round's tag, keeping no state
  between steps (Bonawitz et al. 2017; :mod:`quackmesh.fl.secagg`).
* :func:`mask_update` turns the sandbox's plain training result into a masked one before
  it leaves the node: the coordinator never sees this node's update.
* :func:`flip_update` is the ``wrong`` test behaviour for training: a sign-flipped,
  amplified update (a model-poisoning attacker), for robustness demos and tests.

Everything parsed here comes from the coordinator as JSON; nothing is unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["flip_update", "mask_update", "secagg_step"]

_lock = threading.Lock()


def _keys(secret: bytes, tag: Any) -> Any:
    from quackmesh.fl.secagg import ClientKeys

    if not isinstance(tag, str) or not tag:
        raise ValueError("round_tag must be a non-empty string")
    return ClientKeys.derive(secret, round_tag=tag)


def secagg_step(params: Mapping[str, Any], *, secret: bytes, answered: set[str]) -> dict[str, Any]:
    """Answer one ``fl.secagg`` task; ``ValueError`` for a malformed or unsafe request.

    ``answered`` is the caller's record of the rounds whose unmask request it answered.
    """
    from quackmesh.fl.secagg import advertise, share_keys, unmask_shares

    phase = params.get("phase")
    tag = params.get("round_tag")
    keys = _keys(secret, tag)
    if phase == "advertise":
        return dict(advertise(keys))
    if phase == "shares":
        out = share_keys(
            keys,
            me=int(params["me"]),
            peers=params["peers"],
            threshold=int(params["threshold"]),
            round_tag=str(tag),
        )
        return {str(k): v for k, v in out.items()}
    if phase == "unmask":
        # Answer a round's unmask request once: a second, different request could ask for
        # both the self-mask and the pairwise-mask shares of one client (see secagg docs).
        with _lock:
            if tag in answered:
                raise ValueError(f"already answered the unmask request of round {tag}")
            answered.add(str(tag))
        return dict(
            unmask_shares(
                keys,
                me=int(params["me"]),
                received=params["received"],
                peers=params["peers"],
                survivors=[int(i) for i in params["survivors"]],
                dropped=[int(i) for i in params["dropped"]],
                round_tag=str(tag),
            )
        )
    raise ValueError(f"unknown secure-aggregation phase {phase!r}")


def _delta_vector(result: Mapping[str, Any], model: Mapping[str, Any]) -> Any:
    """The delta as ``(n_params,)`` in the zoo's declared order (the coordinator's too)."""
    from quackmesh.fl.params import flatten
    from quackmesh.fl.zoo import ModelSpec, param_shapes, weights_from_safetensors

    spec = ModelSpec.model_validate(model)
    delta = weights_from_safetensors(base64.b64decode(result["delta"]), spec, field="delta")
    return flatten({name: delta[name] for name in param_shapes(spec)})


def mask_update(
    result: Mapping[str, Any], params: Mapping[str, Any], *, secret: bytes
) -> dict[str, Any]:
    """The masked form of a training result: ``masked`` replaces the delta and the count."""
    from quackmesh.fl.secagg import QuantConfig, masked_input

    block = params["secagg"]
    vector = _delta_vector(result, params["model"])  # (n_params,)
    weight = (
        1
        if block["weight"] == "uniform"
        else min(int(result["n_examples"]), int(block["weight_cap"]))
    )
    quant = QuantConfig(**block["quant"])
    masked = masked_input(
        _keys(secret, block["round_tag"]),
        me=int(block["me"]),
        peers=block["peers"],
        vector=vector * weight,
        weight=weight,
        quant=quant,
        round_tag=str(block["round_tag"]),
    )
    out = {
        k: v
        for k, v in result.items()
        if k not in ("delta", "delta_sha256", "n_examples", "delta_norm")
    }
    out["masked"] = masked
    return out


def flip_update(result: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A poisoned result: the delta negated and scaled ×10 (same shapes, so it parses)."""
    from quackmesh.fl.zoo import ModelSpec, weights_from_safetensors, weights_to_safetensors

    spec = ModelSpec.model_validate(params["model"])
    delta = weights_from_safetensors(base64.b64decode(result["delta"]), spec, field="delta")
    flipped = {k: (-10.0 * np.asarray(v)).astype(np.float32) for k, v in delta.items()}
    data = weights_to_safetensors(flipped)
    return {
        **result,
        "delta": base64.b64encode(data).decode(),
        "delta_sha256": hashlib.sha256(data).hexdigest(),
    }
