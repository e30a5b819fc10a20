"""``infer.embed``: the bundled all-MiniLM-L6-v2 on text, CSV and Parquet; agree(); 422s."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads import get_workload
from quackmesh.workloads.infer_embed import EmbedInputSummary
from quackmesh.workloads.infer_model import pack_tensors, unpack_tensors

WL = get_workload("infer.embed")
TEXTS = [
    "A duck is swimming on the pond.",
    "The stock market fell sharply today.",
    "A duck swims in a small lake.",
    "Interest rates rose and shares dropped.",
]


def vectors(result: dict[str, Any]) -> npt.NDArray[np.float32]:
    out = unpack_tensors(result["embeddings"], result["embeddings_sha256"])
    assert out is not None
    return out["embeddings"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("embed") / "texts"
    path.write_text("\r\n".join(TEXTS) + "\r\n", encoding="utf-8")  # CRLF, final newline
    return path


@pytest.fixture(scope="module")
def result(text_file: Path) -> dict[str, Any]:
    return WL.execute({}, {"data": text_file})


def test_vectors_are_unit_norm_384_float32_in_input_order(result: dict[str, Any]) -> None:
    v = vectors(result)
    assert v.dtype == np.float32 and v.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert result["rows"] == 4 and result["dim"] == 384 and result["truncated"] == 0
    assert result["model"] == "all-MiniLM-L6-v2" and result["cosine_min"] == 0.999
    sim = v @ v.T  # (4, 4) cosines
    assert sim[0, 2] > 0.6 and sim[1, 3] > 0.4  # ducks with ducks, markets with markets
    assert sim[0, 2] > max(sim[0, 1], sim[0, 3]) + 0.3
    assert sim[1, 3] > max(sim[1, 0], sim[1, 2]) + 0.3


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_columns_embed_like_the_text_file(
    fmt: str, result: dict[str, Any], tmp_path: Path
) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "text": TEXTS})
    path = tmp_path / "data"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    spec = WL.parse_spec({"column": "text"})
    summary = WL.check_inputs(spec, {"data": path})
    assert isinstance(summary, EmbedInputSummary) and summary.source == fmt and summary.rows == 4
    other = WL.execute({"column": "text", "batch_size": 1}, {"data": path})
    assert WL.agree(result, other) and WL.agree(other, result)


def test_csv_cells_are_text_even_when_they_look_like_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text\nNA\n\n42\n", encoding="utf-8")
    # pandas skips the blank line; "NA" and "42" stay texts
    assert WL.execute({"column": "text"}, {"data": path})["rows"] == 2


def test_long_texts_are_truncated_by_the_tokenizer_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("duck " * 1000 + "\nshort\n", encoding="utf-8")
    out = WL.execute({}, {"data": path})
    assert out["rows"] == 2 and out["truncated"] == 1 and out["max_tokens"] == 256
    np.testing.assert_allclose(np.linalg.norm(vectors(out), axis=1), 1.0, atol=1e-5)


def test_blank_lines_are_empty_texts(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("first\n\nthird", encoding="utf-8")  # no final newline
    spec = WL.parse_spec({})
    assert WL.check_inputs(spec, {"data": path}).rows == 3


def test_cost_is_one_unit_per_hundred_rows(text_file: Path) -> None:
    spec = WL.parse_spec({})
    assert WL.cost(spec, WL.check_inputs(spec, {"data": text_file})) == 1
    big = EmbedInputSummary(rows=201, columns=1, feature_names=("text",), format="csv")
    assert WL.cost(spec, big) == 3


# --- agree() ------------------------------------------------------------------------------


def _with(result: dict[str, Any], v: npt.NDArray[Any]) -> dict[str, Any]:
    out = copy.deepcopy(result)
    out["embeddings"], out["embeddings_sha256"] = pack_tensors({"embeddings": v})
    return out


def test_agree_accepts_small_rounding_noise(result: dict[str, Any]) -> None:
    v = vectors(result) + np.random.default_rng(0).normal(scale=1e-4, size=(4, 384))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert WL.agree(result, _with(result, v.astype(np.float32)))


def test_agree_rejects_a_wrong_test_nodes_perturbed_result(result: dict[str, Any]) -> None:
    from quackmesh.node.agent import perturb

    assert not WL.agree(result, perturb(result, 0.3)) and not WL.agree(perturb(result, 0.3), result)


def test_agree_rejects_swapped_or_changed_vectors(result: dict[str, Any]) -> None:
    v = vectors(result)
    assert not WL.agree(result, _with(result, v[[2, 1, 0, 3]]))  # two similar rows swapped
    w = v.copy()
    w[3] = -w[3]
    assert not WL.agree(result, _with(result, w))
    assert not WL.agree(result, _with(result, np.zeros_like(v)))  # not unit norm


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cosine_min", 0.5),
        ("rows", 5),
        ("model", "other"),
        ("embeddings_sha256", "0" * 64),
        ("embeddings", "@@@"),
    ],
)
def test_agree_rejects_malformed_results(result: dict[str, Any], key: str, value: Any) -> None:
    other = copy.deepcopy(result) | {key: value}
    assert not WL.agree(result, other) and not WL.agree(other, result)


# --- refusals (422 naming the field) ------------------------------------------------------


def refused(params: dict[str, Any], path: Path) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        WL.check_inputs(WL.parse_spec(params), {"data": path})
    return info.value


@pytest.mark.parametrize(
    ("content", "params", "field"),
    [
        (b"", {}, "inputs.data"),
        (b"\xff\xfe bad utf-8\n", {}, "inputs.data"),
        (b"PK\x03\x04 an npz", {}, "inputs.data"),
        (b"id,text\n1,hello\n", {"column": "body"}, "params.column"),
        (b"hello\n", {"model": "bert-large"}, "params.model"),
        (b"hello\n", {"batch_size": 0}, "params.batch_size"),
        (b"hello\n", {"cosine_min": 1.5}, "params.cosine_min"),
    ],
)
def test_bad_inputs_are_refused_naming_the_field(
    content: bytes, params: dict[str, Any], field: str, tmp_path: Path
) -> None:
    path = tmp_path / "data"
    path.write_bytes(content)
    assert refused(params, path).context["field"] == field


def test_parquet_needs_a_text_column(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"n": [1, 2], "text": ["a", None]}).to_parquet(path, index=False)
    assert refused({}, path).context["field"] == "params.column"
    assert refused({"column": "n"}, path).context["field"] == "params.column"
    assert "missing values" in refused({"column": "text"}, path).detail


def test_too_many_rows_or_bytes_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module("quackmesh.workloads.infer_embed")
    path = tmp_path / "texts.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    monkeypatch.setattr(module, "MAX_ROWS", 2)
    assert refused({}, path).context["max_rows"] == 2
    csv = tmp_path / "texts.csv"
    csv.write_text("text\na\nb\nc\n", encoding="utf-8")
    assert refused({"column": "text"}, csv).context["field"] == "inputs.data"
    monkeypatch.setattr(module, "MAX_BYTES", 4)
    assert "more than the limit" in refused({}, path).detail
