"""Admin-only management of API keys and worker join tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlmodel import col, select

from api.auth import AdminKey, create_api_key, create_join_token, revoke_api_key, revoke_join_token
from api.deps import ReadSessionDep, SessionDep
from api.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, JoinTokenCreate, JoinTokenCreated, JoinTokenPublic
from profiles.models import ApiKey, JoinToken

router = APIRouter(tags=["access"])


@router.post("/keys", status_code=201, response_model=ApiKeyCreated)
def create_key(body: ApiKeyCreate, session: SessionDep, _admin: AdminKey) -> dict:
    row, key = create_api_key(session, body.scope, body.name)
    return {**row.model_dump(), "key": key}


@router.get("/keys", response_model=list[ApiKeyPublic])
def list_keys(session: ReadSessionDep, _admin: AdminKey) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))))


@router.delete("/keys/{key_id}", response_model=ApiKeyPublic)
def revoke_key(key_id: str, session: SessionDep, _admin: AdminKey) -> ApiKey:
    return revoke_api_key(session, key_id)


@router.post("/join-tokens", status_code=201, response_model=JoinTokenCreated)
def create_token(body: JoinTokenCreate, session: SessionDep, _admin: AdminKey) -> dict:
    row, token = create_join_token(session, timedelta(hours=body.ttl_hours), body.max_uses, body.note, body.labels)
    return {**row.model_dump(), "token": token}


@router.get("/join-tokens", response_model=list[JoinTokenPublic])
def list_tokens(session: ReadSessionDep, _admin: AdminKey) -> list[JoinToken]:
    return list(session.exec(select(JoinToken).order_by(col(JoinToken.created_at))))


@router.delete("/join-tokens/{token_id}", response_model=JoinTokenPublic)
def revoke_token(token_id: str, session: SessionDep, _admin: AdminKey) -> JoinToken:
    return revoke_join_token(session, token_id)
