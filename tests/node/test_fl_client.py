"""The node's federated helpers: secure-aggregation steps and result rewriting."""

from __future__ import annotations

import base64
import secrets

import numpy as np
import pytest

from quackmesh.fl.zoo import (
    ModelSpec,
    init_weights,
    weights_from_safetensors,
    weights_to_safetensors,
)
from quackmesh.node.fl_client import flip_update, secagg_step

SPEC = ModelSpec(arch="logreg", n_features=4, n_classes=3)


def test_advertise_is_stable_for_a_round_and_differs_across_rounds() -> None:
    secret = secrets.token_bytes(32)
    a = secagg_step({"phase": "advertise", "round_tag": "j/1/0"}, secret=secret, answered=set())
    b = secagg_step({"phase": "advertise", "round_tag": "j/1/0"}, secret=secret, answered=set())
    c = secagg_step({"phase": "advertise", "round_tag": "j/2/0"}, secret=secret, answered=set())
    assert a == b and a != c and set(a) == {"c_pk", "s_pk", "b_commit"}


@pytest.mark.parametrize(
    "params",
    [
        {"phase": "nope", "round_tag": "t"},
        {"phase": "advertise", "round_tag": ""},
        {"phase": "advertise"},
    ],
)
def test_malformed_steps_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        secagg_step(params, secret=secrets.token_bytes(32), answered=set())


def test_an_unmask_request_is_answered_once_per_round() -> None:
    answered = {"j/1/0"}  # already answered this round's unmask request
    params = {"phase": "unmask", "round_tag": "j/1/0", "me": 1, "received": {}, "peers": {},
              "survivors": [1], "dropped": []}  # fmt: skip
    with pytest.raises(ValueError, match="already answered"):
        secagg_step(params, secret=secrets.token_bytes(32), answered=answered)


def test_flip_update_negates_and_amplifies_the_delta() -> None:
    delta = init_weights(SPEC, seed=1)
    blob = weights_to_safetensors(delta)
    result = {"delta": base64.b64encode(blob).decode(), "n_examples": 5}
    flipped = flip_update(result, {"model": SPEC.model_dump(mode="json")})
    got = weights_from_safetensors(base64.b64decode(flipped["delta"]), SPEC)
    for name, value in delta.items():
        assert np.allclose(got[name], -10 * value)
    assert flipped["n_examples"] == 5
