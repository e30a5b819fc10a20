"""Federated training endpoints for the job's owner: round history, model and model card.

Jobs are submitted through ``POST /v1/jobs`` with ``kind: fl.train``; these read them.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from quackmesh.coordinator.deps import ReadSigner, RuntimeDep
from quackmesh.coordinator.fl.views import model_sha, run_public
from quackmesh.coordinator.jobs.service import get_owned_job
from quackmesh.core.errors import InvalidState
from quackmesh.core.schemas import FlRunPublic, JobState

router = APIRouter(prefix="/v1/fl/jobs", tags=["federated"])


@router.get("/{job_id}", response_model=FlRunPublic)
def read_run(job_id: str, signer: ReadSigner, rt: RuntimeDep) -> FlRunPublic:
    """Round by round: participants, holdout and federated metrics, ε, scores, rewards."""
    with rt.reads() as session:
        return run_public(session, get_owned_job(session, job_id, signer))


@router.get("/{job_id}/model", response_class=FileResponse)
def download_model(
    job_id: str,
    signer: ReadSigner,
    rt: RuntimeDep,
    round: int | None = Query(default=None, ge=1, description="the model after this round"),
) -> FileResponse:
    """The trained weights as safetensors (the final model, or after round ``round``)."""
    with rt.reads() as session:
        sha = model_sha(session, get_owned_job(session, job_id, signer), round_no=round)
    return FileResponse(
        rt.blobs.path_for(sha),
        media_type="application/octet-stream",
        filename=f"{job_id}.safetensors",
        headers={"X-Content-SHA256": sha},
    )


@router.get("/{job_id}/card")
def model_card(job_id: str, signer: ReadSigner, rt: RuntimeDep) -> dict[str, Any]:
    """The final model's JSON model card: architecture, shapes, training and metrics."""
    with rt.reads() as session:
        job = get_owned_job(session, job_id, signer)
        if job.state != JobState.SUCCEEDED.value or job.result_sha256 is None:
            raise InvalidState(f"job {job.id} is {job.state}", job_id=job.id, state=job.state)
        result = json.loads(rt.blobs.path_for(job.result_sha256).read_bytes())
    card: dict[str, Any] = dict(result["model_card"])
    card["weights_sha256"] = result["model_sha256"]
    return card
