"""Read-only catalogue: methods (registry mirror), models, stored profiles."""

from __future__ import annotations

import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from sqlmodel import func, select

from api.auth import ClientKey
from api.deps import ReadSessionDep
from api.schemas import ModelPublic, Page
from profiles.models import Method, ModelSpec, ProfileRun
from profiles.transfer import iter_records, write_records

router = APIRouter(tags=["catalogue"])


@router.get("/methods")
def list_methods(session: ReadSessionDep, _key: ClientKey) -> list[dict]:
    return [m.model_dump(mode="json") for m in session.exec(select(Method).order_by(Method.id))]


@router.get("/models", response_model=list[ModelPublic])
def list_models(session: ReadSessionDep, _key: ClientKey) -> list[ModelSpec]:
    return list(session.exec(select(ModelSpec).order_by(ModelSpec.id)))


def _filtered(model_id, method_id, hardware_class, workload_id, status, job_id=None):
    statement = select(ProfileRun)
    for column, value in (
        (ProfileRun.model_id, model_id),
        (ProfileRun.method_id, method_id),
        (ProfileRun.hardware_class, hardware_class),
        (ProfileRun.workload_id, workload_id),
        (ProfileRun.status, status),
        (ProfileRun.job_id, job_id),
    ):
        if value is not None:
            statement = statement.where(column == value)
    return statement


@router.get("/profiles", response_model=Page)
def list_profiles(
    session: ReadSessionDep,
    _key: ClientKey,
    model_id: str | None = None,
    method_id: str | None = None,
    hardware_class: str | None = None,
    workload_id: str | None = None,
    status: Literal["ok", "failed", "not-applicable"] | None = None,
    job_id: str | None = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    statement = _filtered(model_id, method_id, hardware_class, workload_id, status, job_id)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    page = statement.order_by(ProfileRun.created_at, ProfileRun.run_id).offset(offset).limit(limit)
    return {"total": total, "offset": offset, "limit": limit, "items": list(iter_records(session, page))}


@router.get("/profiles/export", response_class=PlainTextResponse)
def export_profiles(
    session: ReadSessionDep,
    _key: ClientKey,
    format: Literal["jsonl", "csv"] = "jsonl",
    model_id: str | None = None,
    method_id: str | None = None,
    hardware_class: str | None = None,
    workload_id: str | None = None,
    status: Literal["ok", "failed", "not-applicable"] | None = None,
    job_id: str | None = None,
) -> PlainTextResponse:
    statement = _filtered(model_id, method_id, hardware_class, workload_id, status, job_id)
    out = io.StringIO()
    write_records(iter_records(session, statement.order_by(ProfileRun.created_at, ProfileRun.run_id)), out, format)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return PlainTextResponse(
        out.getvalue(), media_type=media, headers={"Content-Disposition": f'attachment; filename="profiles.{format}"'}
    )
