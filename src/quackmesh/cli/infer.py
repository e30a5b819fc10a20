"""``quackmesh infer``: inference on the network.

Batch commands submit a job, follow it to the end and write its result locally::

    quackmesh infer predict --model model.onnx --data rows.csv --out predictions.csv
    quackmesh infer predict --model job_0123abcd... --data rows.csv --label label
    quackmesh infer predict --model model.safetensors --data rows.csv  # + model.card.json
    quackmesh infer embed-file texts.txt --out vectors.npz
    quackmesh infer embed-file reviews.csv --column text --out vectors.npz
    quackmesh infer generate-file prompts.txt --model tiny --max-tokens 64 --out answers.jsonl

``--model`` is an ONNX file, a finished ``fl.train`` job's id (its final weights and model
card are fetched with the SDK), or the safetensors file that ``quackmesh train --out FILE``
saved, next to its ``FILE.card.json`` (or name the card with ``--card``). Commands that
talk to the OpenAI-compatible gateway live on ``app`` too; each one is a plain function
registered with ``@app.command``.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer

from quackmesh.cli.common import (
    DEFAULT_COORDINATOR,
    console,
    die,
    handle_errors,
    load_wallet,
    parse_amount,
    print_json,
)
from quackmesh.cli.exit_codes import ExitCode
from quackmesh.cli.job import POLICIES, follow
from quackmesh.core.money import format_duck
from quackmesh.core.schemas import JobPublic, JobState, Verification
from quackmesh.sdk import Client

__all__ = ["ModelSource", "app", "embed_file", "generate_file", "predict", "resolve_model"]

app = typer.Typer(help="Run inference: batch predictions and embeddings.", no_args_is_help=True)

WalletOpt = Annotated[Path | None, typer.Option("--wallet", "-w", help="keystore file")]
CoordOpt = Annotated[
    str, typer.Option("--coordinator", "-c", help="coordinator URL [env QUACKMESH_COORDINATOR]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print a JSON summary")]
PriceOpt = Annotated[str, typer.Option("--max-price", help="max DUCK per compute unit")]
VerifyOpt = Annotated[
    str, typer.Option("--verify", help="verification: none|redundant|adaptive|honeypot|reference")
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="seconds to wait for the job")]

_JOB_ID = re.compile(r"^job_[0-9a-f]{20}$")
_PREDICTION_SUFFIXES = (".csv", ".json", ".npz")
_EMBEDDING_SUFFIXES = (".npz", ".npy")
_ANSWER_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class ModelSource:
    """A model ready to upload: the file, the job params that describe it, a label."""

    path: Path
    params: dict[str, Any]
    label: str


def _architecture(card: dict[str, Any]) -> dict[str, Any]:
    """The zoo ``ModelSpec`` fields of an ``fl.train`` model card."""
    try:
        arch = {k: card[k] for k in ("arch", "n_features", "n_classes")}
    except KeyError as exc:
        die(f"the model card has no {exc.args[0]!r}: is it from `quackmesh train`?", ExitCode.USAGE)
    if card.get("hidden") is not None:
        arch["hidden"] = card["hidden"]
    return arch


def _is_safetensors(path: Path) -> bool:
    """A safetensors file: 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**24


def resolve_model(client: Client, model: str, *, card: Path | None, workdir: Path) -> ModelSource:
    """Turn ``--model`` into a file and params (see the module docs); ``workdir`` receives
    a federated job's downloaded weights."""
    path = Path(model)
    if path.is_file():
        if not _is_safetensors(path):
            return ModelSource(path, {"format": "onnx"}, f"ONNX model {path.name}")
        card_path = card or path.with_suffix(".card.json")
        if not card_path.is_file():
            die(
                f"{path} needs its model card: `quackmesh train --out` writes {card_path.name};"
                " or pass --card FILE",
                ExitCode.USAGE,
            )
        try:
            meta = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            die(f"cannot read model card {card_path}: {exc}", ExitCode.USAGE)
        params = {"format": "zoo", "architecture": _architecture(meta)}
        return ModelSource(path, params, f"{meta.get('arch')} model {path.name}")
    if _JOB_ID.match(model):
        meta = client.model_card(model)
        dest = client.download_model(model, workdir / f"{model}.safetensors")
        params = {"format": "zoo", "architecture": _architecture(meta)}
        return ModelSource(dest, params, f"{meta.get('arch')} model of {model}")
    die(f"--model {model!r} is neither a file nor a federated job id", ExitCode.USAGE)


def _verification(policy: str) -> Verification:
    if policy not in POLICIES:
        die(f"--verify must be one of {', '.join(POLICIES)}", ExitCode.USAGE)
    return Verification.model_validate({"policy": policy})


def _run(
    client: Client, kind: str, *, what: str, json_out: bool, timeout: float, **submit: Any
) -> tuple[JobPublic, dict[str, Any]]:
    """Submit a ``kind`` job (``submit``: :meth:`Client.submit`'s arguments), say so unless
    ``json_out`` (``what`` names the work), and follow it to the end (:func:`_finish`)."""
    job = client.submit(kind, **submit)
    if not json_out:
        console.print(
            f"submitted {job.id}: {what} ({job.units} units, "
            f"escrowed {format_duck(job.escrowed)} DUCK)",
            highlight=False,
        )
    return _finish(client, job, timeout=timeout)


def _finish(client: Client, job: JobPublic, *, timeout: float) -> tuple[JobPublic, dict[str, Any]]:
    """Follow ``job`` to its end: the finished job and its result, or exit with its error."""
    done = follow(client, job.id, timeout=timeout)
    if done.state != JobState.SUCCEEDED:
        failures = [f"{f.reason}: {f.detail}" for t in done.tasks for f in t.failures]
        detail = done.error or (failures[-1] if failures else "no detail")
        die(f"job {job.id} {done.state.value}: {detail}", ExitCode.JOB_FAILED)
    return done, client.result(job.id).result


def _tensors(result: dict[str, Any], key: str) -> dict[str, npt.NDArray[Any]]:
    from quackmesh.workloads.infer_model import unpack_tensors

    tensors = unpack_tensors(result.get(key), result.get(f"{key}_sha256"))
    if tensors is None:
        die("the job's result is malformed (its tensors do not decode)", ExitCode.ERROR)
    return tensors


def _write_predictions(out: Path, result: dict[str, Any], arrays: dict[str, Any]) -> None:
    classes = result.get("classes")
    probs, values = arrays.get("probabilities"), arrays.get("values")
    if out.suffix == ".npz":
        named: dict[str, Any] = {}
        if classes is not None:
            named["predictions"] = np.asarray(classes, dtype=np.int64)
        named |= {k: v for k, v in (("probabilities", probs), ("values", values)) if v is not None}
        with open(out, "wb") as fh:  # a handle: numpy would otherwise add ".npz"
            np.savez(fh, **named)
    elif out.suffix == ".json":
        data: dict[str, Any] = {"predictions": classes} if classes is not None else {}
        data |= {
            k: v.tolist()
            for k, v in (("probabilities", probs), ("values", values))
            if v is not None
        }
        out.write_text(json.dumps(data) + "\n")
    else:
        import pandas as pd

        frame = pd.DataFrame({"prediction": classes} if classes is not None else {})
        for name, arr in (("p", probs), ("value", values)):
            if arr is None:
                continue
            cols = arr.reshape(arr.shape[0], -1)
            for j in range(cols.shape[1]):
                frame[f"{name}_{j}" if cols.shape[1] > 1 or name == "p" else name] = cols[:, j]
        frame.to_csv(out, index=False)


@app.command()
@handle_errors
def predict(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="an .onnx file, an fl.train job id, or a .safetensors file"
        ),
    ],
    data: Annotated[
        Path, typer.Option("--data", "-d", exists=True, dir_okay=False, help="CSV, NPZ or Parquet")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write predictions (.csv, .json or .npz)")
    ] = None,
    card: Annotated[
        Path | None, typer.Option("--card", help="model card of a .safetensors model")
    ] = None,
    features: Annotated[
        str | None, typer.Option("--features", help="comma-separated feature columns")
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="leave this column out and score against it")
    ] = None,
    task: Annotated[str, typer.Option("--task", help="classify | regress")] = "classify",
    output: Annotated[
        str | None, typer.Option("--output", help="ONNX output to read (default: the scores)")
    ] = None,
    max_price: PriceOpt = "0.05",
    verify: VerifyOpt = "none",
    memory_mb: Annotated[int, typer.Option("--memory", min=1024, help="MiB per task")] = 2048,
    timeout: TimeoutOpt = 900.0,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Predict with a trained model on every row of DATA (an infer.model job)."""
    if out is not None and out.suffix not in _PREDICTION_SUFFIXES:
        die(f"--out must end in {', '.join(_PREDICTION_SUFFIXES)}", ExitCode.USAGE)
    if task not in ("classify", "regress"):
        die("--task must be classify or regress", ExitCode.USAGE)
    price = parse_amount(max_price, "--max-price")
    verification = _verification(verify)
    with Client(coordinator, load_wallet(wallet)) as client, tempfile.TemporaryDirectory() as tmp:
        source = resolve_model(client, model, card=card, workdir=Path(tmp))
        params: dict[str, Any] = {**source.params, "task": task}
        if features:
            params["features"] = [f.strip() for f in features.split(",") if f.strip()]
        if label:
            params["label"] = label
        if output:
            params["output"] = output
        done, result = _run(
            client,
            "infer.model",
            what=f"{source.label} on {data.name}",
            json_out=json_out,
            timeout=timeout,
            data=data,
            inputs={"model": client.upload(source.path).sha256},
            params=params,
            max_price=price,
            memory_mb=memory_mb,
            verification=verification,
        )
    arrays = _tensors(result, "tensors")
    if out is not None:
        _write_predictions(out, result, arrays)
    _report_predictions(done, result, out, json_out=json_out)


def _report_predictions(
    job: JobPublic, result: dict[str, Any], out: Path | None, *, json_out: bool
) -> None:
    classes = result.get("classes")
    counts = dict(sorted(Counter(classes).items())) if classes is not None else None
    summary = {
        "job_id": job.id,
        "rows": result["rows"],
        "task": result["task"],
        "scores": result["scores"],
        "class_counts": {str(k): v for k, v in counts.items()} if counts is not None else None,
        "accuracy": result.get("accuracy"),
        "mse": result.get("mse"),
        "units": job.units,
        "paid": job.paid + job.fee,
        "out": str(out) if out is not None else None,
    }
    if json_out:
        print_json(summary)
        return
    line = f"{job.id}: {result['rows']} rows"
    if counts is not None:
        line += " · " + ", ".join(f"class {k}: {v}" for k, v in counts.items())
    if result.get("accuracy") is not None:
        line += f" · accuracy {result['accuracy']:.2%}"
    if result.get("mse") is not None:
        line += f" · mse {result['mse']:.4g}"
    line += f" · paid {format_duck(job.paid + job.fee)} DUCK"
    console.print(line, highlight=False)
    if out is not None:
        console.print(f"predictions written to {out}", highlight=False)


@app.command("embed-file")
@handle_errors
def embed_file(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="text (one per line), CSV or Parquet"),
    ],
    column: Annotated[
        str | None, typer.Option("--column", help="text column of a CSV or Parquet file")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the vectors (.npz or .npy)")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=512)] = 32,
    max_price: PriceOpt = "0.05",
    verify: VerifyOpt = "none",
    memory_mb: Annotated[int, typer.Option("--memory", min=1024, help="MiB per task")] = 4096,
    timeout: TimeoutOpt = 900.0,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Embed every text of FILE with all-MiniLM-L6-v2 (an infer.embed batch job)."""
    if out is not None and out.suffix not in _EMBEDDING_SUFFIXES:
        die(f"--out must end in {', '.join(_EMBEDDING_SUFFIXES)}", ExitCode.USAGE)
    price = parse_amount(max_price, "--max-price")
    verification = _verification(verify)
    params: dict[str, Any] = {"batch_size": batch_size}
    if column:
        params["column"] = column
    with Client(coordinator, load_wallet(wallet)) as client:
        done, result = _run(
            client,
            "infer.embed",
            what=f"embedding {file.name}",
            json_out=json_out,
            timeout=timeout,
            data=file,
            params=params,
            max_price=price,
            memory_mb=memory_mb,
            verification=verification,
        )
    vectors = _tensors(result, "embeddings")["embeddings"]  # (rows, dim), unit norm
    if out is not None:
        if out.suffix == ".npy":
            np.save(out, vectors, allow_pickle=False)
        else:
            with open(out, "wb") as fh:
                np.savez(fh, embeddings=vectors)
    summary = {
        "job_id": done.id,
        "rows": result["rows"],
        "dim": result["dim"],
        "model": result["model"],
        "truncated": result["truncated"],
        "units": done.units,
        "paid": done.paid + done.fee,
        "out": str(out) if out is not None else None,
    }
    if json_out:
        print_json(summary)
        return
    console.print(
        f"{done.id}: {result['rows']} texts → {result['dim']}-dim vectors ({result['model']})"
        f" · {result['truncated']} truncated to {result['max_tokens']} tokens"
        f" · paid {format_duck(done.paid + done.fee)} DUCK",
        highlight=False,
    )
    if out is not None:
        console.print(f"vectors written to {out}", highlight=False)


@app.command("generate-file")
@handle_errors
def generate_file(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="prompts (one per line), CSV or Parquet"),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="a served model's name")],
    mode: Annotated[
        str, typer.Option("--mode", help="complete (raw prompts) or chat (user messages)")
    ] = "complete",
    system: Annotated[
        str | None, typer.Option("--system", help="chat mode: a system message")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096)] = 128,
    column: Annotated[
        str | None, typer.Option("--column", help="prompt column of a CSV or Parquet file")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the answers (.jsonl or .csv)")
    ] = None,
    max_price: PriceOpt = "0.05",
    verify: VerifyOpt = "none",
    timeout: TimeoutOpt = 1800.0,
    wallet: WalletOpt = None,
    coordinator: CoordOpt = DEFAULT_COORDINATOR,
    json_out: JsonOpt = False,
) -> None:
    """Answer every prompt of FILE with a model provider nodes serve (an infer.generate
    batch job: greedy decoding, so --verify redundant compares the answers token by token)."""
    if out is not None and out.suffix not in _ANSWER_SUFFIXES:
        die(f"--out must end in {', '.join(_ANSWER_SUFFIXES)}", ExitCode.USAGE)
    if mode not in ("complete", "chat"):
        die("--mode must be complete or chat", ExitCode.USAGE)
    price = parse_amount(max_price, "--max-price")
    verification = _verification(verify)
    params: dict[str, Any] = {"model": model, "mode": mode, "max_tokens": max_tokens}
    params |= {"column": column} if column else {}
    params |= {"system": system} if system else {}
    with Client(coordinator, load_wallet(wallet)) as client:
        done, result = _run(
            client,
            "infer.generate",
            what=f"{file.name} on {model}",
            json_out=json_out,
            timeout=timeout,
            data=file,
            params=params,
            max_price=price,
            verification=verification,
        )
    answers = result["completions"]
    if out is not None:
        _write_answers(out, answers)
    summary = {
        "job_id": done.id,
        "model": result["model"],
        "rows": result["rows"],
        "prompt_tokens": result["prompt_tokens"],
        "completion_tokens": result["completion_tokens"],
        "units": done.units,
        "paid": done.paid + done.fee,
        "out": str(out) if out is not None else None,
    }
    if json_out:
        print_json(summary | ({} if out is not None else {"completions": answers}))
        return
    if out is None:
        for i, answer in enumerate(answers):
            console.print(f"[{i}] {answer['text']}", highlight=False, markup=False)
    console.print(
        f"{done.id}: {result['rows']} prompts → {result['completion_tokens']} tokens"
        f" ({result['model']}) · paid {format_duck(done.paid + done.fee)} DUCK",
        highlight=False,
    )
    if out is not None:
        console.print(f"answers written to {out}", highlight=False)


def _write_answers(out: Path, answers: list[dict[str, Any]]) -> None:
    """One row per prompt, in order: text, finish reason and how many tokens."""
    rows = [
        {
            "row": i,
            "text": a["text"],
            "finish_reason": a["finish_reason"],
            "tokens": len(a["token_ids"]),
        }
        for i, a in enumerate(answers)
    ]
    if out.suffix == ".jsonl":
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    import csv

    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["row", "text", "finish_reason", "tokens"])
        writer.writeheader()
        writer.writerows(rows)
