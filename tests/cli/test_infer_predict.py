"""``quackmesh infer predict`` and ``infer embed-file`` against a live local network: a
coordinator on loopback and real node subprocesses running the jobs in their sandboxes.

The nodes hold partitions of scikit-learn's digits, so one federated job can train the
model that ``infer predict --model JOB_ID`` then uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from typer.testing import CliRunner

from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.fldata import prepare_node_data
from quackmesh.cli.localnet import LocalNetwork
from quackmesh.cli.main import app
from quackmesh.fl.zoo import ModelSpec, build
from tests.e2e.conftest import e2e_settings

pytestmark = pytest.mark.slow

W = np.array([[1.0, -1.0, 0.5], [0.5, 2.0, -1.0]], dtype=np.float32)  # (2 features, 3 classes)
B = np.array([0.1, 0.0, -0.1], dtype=np.float32)
WAIT = ["--timeout", "180"]  # every followed job is bounded


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalNetwork, Path]]:
    root = tmp_path_factory.mktemp("infer-net")
    data = prepare_node_data(root / "data", 2, dataset="digits", partition="iid", holdout=300)
    net = LocalNetwork(e2e_settings(root / "home", offline_after_s=600.0, match_window_s=0.0))
    net.start_coordinator_thread()
    try:
        net.start_nodes(2, price=100, datasets=data.registries, heartbeat_s=1.0)
        assert net.wait_nodes_online(2, timeout=60) == 2
        yield net, data.holdout
    finally:
        net.stop()


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("QUACKMESH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUACKMESH_WALLET_PASSWORD", "correct horse")
    monkeypatch.delenv("QUACKMESH_WALLET", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    assert runner.invoke(app, ["wallet", "new"]).exit_code == 0
    return runner


def funded(cli: CliRunner, net: LocalNetwork) -> list[str]:
    url = ["--coordinator", net.url]
    assert cli.invoke(app, ["wallet", "faucet", "100", *url]).exit_code == 0
    return url


def logreg_onnx(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]),
         helper.make_node("Add", ["z", "b"], ["l"]),
         helper.make_node("Softmax", ["l"], ["probabilities"], axis=1)],
        "logreg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def torch_classes(weights: Path, arch: dict[str, object], x: np.ndarray) -> list[int]:
    spec = ModelSpec.model_validate(arch)
    module = build(spec)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(weights).items()})
    with torch.inference_mode():
        logits = module(torch.from_numpy(x.astype(np.float32)))
    return [int(c) for c in logits.argmax(dim=1).tolist()]


def test_predict_with_an_onnx_file_writes_predictions_and_a_summary(
    cli: CliRunner, network: tuple[LocalNetwork, Path], tmp_path: Path
) -> None:
    net, _ = network
    url = funded(cli, net)
    x = np.random.default_rng(0).normal(scale=2.0, size=(120, 2))
    data = tmp_path / "rows.csv"
    pd.DataFrame(x, columns=["a", "b"]).to_csv(data, index=False)
    out = tmp_path / "predictions.csv"
    model = logreg_onnx(tmp_path / "logreg.onnx")
    result = cli.invoke(
        app, ["infer", "predict", "--model", str(model), "--data", str(data), "--out", str(out),
              "--max-price", "0.01", *WAIT, *url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    z = x.astype(np.float32) @ W + B
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    classes = expected.argmax(axis=1)
    counts = np.bincount(classes, minlength=3)
    assert "120 rows" in result.output and "Traceback" not in result.output
    assert f"class 0: {counts[0]}, class 1: {counts[1]}, class 2: {counts[2]}" in result.output
    written = pd.read_csv(out)
    assert list(written.columns) == ["prediction", "p_0", "p_1", "p_2"]
    assert written["prediction"].tolist() == classes.tolist()
    np.testing.assert_allclose(written[["p_0", "p_1", "p_2"]].to_numpy(), expected, atol=1e-6)


def test_predict_with_a_federated_job_id_and_with_its_saved_weights_and_card(
    cli: CliRunner, network: tuple[LocalNetwork, Path], tmp_path: Path
) -> None:
    net, holdout = network
    url = funded(cli, net)
    saved = tmp_path / "model.safetensors"
    trained = cli.invoke(
        app, ["train", "--model", "logreg", "--dataset", "digits", "--rounds", "1",
              "--clients", "2", "--min-clients", "2", "--epochs", "2", "--lr", "0.1",
              "--follow", "--out", str(saved), *WAIT, *url],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    job_id = re.findall(r"job_[0-9a-f]{20}", trained.output)[-1]
    frame = pd.read_csv(holdout)
    x, y = frame.drop(columns="label").to_numpy(), frame["label"].to_numpy()
    card = json.loads(saved.with_suffix(".card.json").read_text())
    expected = torch_classes(saved, {k: card[k] for k in ("arch", "n_features", "n_classes")}, x)

    by_id = cli.invoke(
        app, ["infer", "predict", "--model", job_id, "--data", str(holdout), "--label", "label",
              "--json", *WAIT, *url],
    )  # fmt: skip
    assert by_id.exit_code == 0, by_id.output
    summary = json.loads(by_id.output)
    assert summary["rows"] == 300 and summary["task"] == "classify"
    assert summary["accuracy"] == pytest.approx(float(np.mean(np.array(expected) == y)))
    assert sum(summary["class_counts"].values()) == 300 and summary["paid"] > 0

    out = tmp_path / "predictions.npz"
    local = cli.invoke(
        app, ["infer", "predict", "--model", str(saved), "--data", str(holdout), "--label",
              "label", "--out", str(out), *WAIT, *url],
    )  # fmt: skip
    assert local.exit_code == 0, local.output
    with np.load(out) as npz:
        assert npz["predictions"].tolist() == expected
        assert npz["probabilities"].shape == (300, 10)


def test_embed_file_writes_unit_vectors(
    cli: CliRunner, network: tuple[LocalNetwork, Path], tmp_path: Path
) -> None:
    net, _ = network
    url = funded(cli, net)
    texts = tmp_path / "texts.txt"
    texts.write_text("a duck on a pond\na duck in a lake\nshares fell today\n", encoding="utf-8")
    out = tmp_path / "vectors.npz"
    result = cli.invoke(
        app, ["infer", "embed-file", str(texts), "--out", str(out), "--json", *WAIT, *url]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == 3 and summary["dim"] == 384 and summary["truncated"] == 0
    with np.load(out) as npz:
        v = npz["embeddings"]
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_a_feature_mismatch_is_refused_at_submission_in_one_line(
    cli: CliRunner, network: tuple[LocalNetwork, Path], tmp_path: Path
) -> None:
    net, _ = network
    url = funded(cli, net)
    data = tmp_path / "rows.csv"
    data.write_text("a,b,c\n1,2,3\n")
    model = logreg_onnx(tmp_path / "logreg.onnx")
    result = cli.invoke(
        app, ["infer", "predict", "--model", str(model), "--data", str(data), *WAIT, *url]
    )
    assert result.exit_code == ExitCode.REJECTED
    assert "3 feature columns, the model takes 2" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "nope.onnx"], "neither a file nor a federated job id"),
        (["--model", "MODEL", "--out", "p.txt"], "--out must end in"),
        (["--model", "WEIGHTS"], "needs its model card"),
        (["--model", "MODEL", "--task", "cluster"], "--task must be"),
    ],
)
def test_usage_errors_print_one_line(
    cli: CliRunner, tmp_path: Path, args: list[str], needle: str
) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    model = logreg_onnx(tmp_path / "m.onnx")
    args = [{"MODEL": str(model), "WEIGHTS": str(weights)}.get(a, a) for a in args]
    result = cli.invoke(
        app, ["infer", "predict", *args, "--data", str(data), "--coordinator", "http://127.0.0.1:9"]
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert needle in result.output and "Traceback" not in result.output
