"""The inference part of ``quackmesh demo`` (``cli/demo_infer.py``).

The figures of a whole demo run (embeddings through the gateway, the federated model's
prediction job) are asserted in ``tests/e2e/test_nodes_e2e.py::
test_demo_json_reports_every_check``, which already runs the full ``--json`` demo; here
are its pure checks and its failure path: a serving node whose model does not load.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from quackmesh.cli import demo_infer
from quackmesh.cli.demo_infer import (
    SERVE_MODEL,
    closest_pair,
    cosine_matrix,
    inference_tour,
    mlp_logits,
    start_serving_node,
    wait_online,
)
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.core.money import UNIT
from quackmesh.core.wallet import Wallet
from quackmesh.sdk import Client
from tests.e2e.conftest import e2e_settings


def test_exported_names_are_sorted_and_exist() -> None:
    assert demo_infer.__all__ == sorted(demo_infer.__all__)
    assert all(hasattr(demo_infer, name) for name in demo_infer.__all__)


def test_cosine_matrix_is_symmetric_with_ones_on_the_diagonal() -> None:
    v = np.array([[3.0, 4.0], [6.0, 8.0], [4.0, -3.0]])  # not unit length on purpose
    sim = cosine_matrix(v)
    assert sim.shape == (3, 3)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == pytest.approx(0.0)


def test_closest_pair_ignores_the_diagonal_and_puts_the_lower_index_first() -> None:
    sim = np.array(
        [
            [1.0, 0.1, 0.2, 0.3],
            [0.1, 1.0, 0.05, 0.9],
            [0.2, 0.05, 1.0, 0.4],
            [0.3, 0.9, 0.4, 1.0],
        ]
    )
    assert closest_pair(sim) == (1, 3)


def test_mlp_logits_match_the_torch_zoo_model() -> None:
    import torch

    from quackmesh.fl.zoo import ModelSpec, build, init_weights

    spec = ModelSpec(arch="mlp", n_features=12, n_classes=4, hidden=[8, 6])
    weights = init_weights(spec, seed=3)
    x = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    module = build(spec)
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(mlp_logits(weights, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_model_that_does_not_load_fails_the_inference_check_not_the_tour(
    tmp_path: Path,
) -> None:
    """The serving node exits with its backend's error; an honest node without the model
    takes its place, and the inference section reports both failures as failed checks."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "modules.json").write_text("[]")  # looks like a model; loads as nothing
    net = LocalNetwork(e2e_settings(tmp_path / "home", offline_after_s=30.0))
    net.start_coordinator_thread()
    try:
        serving = start_serving_node(
            net, price=UNIT // 100, dataset=tmp_path / "no-datasets.json", backend=f"st:{broken}"
        )
        replaced: list[int] = []

        def replace() -> None:
            replaced.append(len(net.start_nodes(1, price=UNIT // 100)))

        assert wait_online(net, 1, serving, replace=replace, timeout=120) == 1
        assert replaced == [1] and serving.process.poll() not in (None, 0)
        assert serving.error is not None and SERVE_MODEL in serving.error
        assert str(serving.log) in serving.error
        assert "(backend_error)" in serving.error  # the node's own error line

        payer = Wallet.create()
        with Client(net.url, payer) as client:
            client.faucet(10 * UNIT)
        summary = inference_tour(
            net,
            payer,
            serving=serving,
            fl_job="job_" + "0" * 20,  # no such federated run: its model cannot be had
            fl_accuracy=None,
            holdout=tmp_path / "unused.csv",
            max_price=UNIT // 20,
            out=Console(file=io.StringIO(), width=200),
            timeout=30,
        )
    finally:
        net.stop()
    json.dumps(summary)  # the demo prints it with --json
    assert summary["ok"] is False
    assert summary["embeddings"]["ok"] is False
    assert summary["embeddings"]["error"] == serving.error
    assert summary["prediction"]["ok"] is False
    assert "could not be used" in summary["prediction"]["error"]
