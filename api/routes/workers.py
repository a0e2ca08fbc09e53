"""Worker nodes join with a token, heartbeat, and leave; silent nodes are marked lost."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from fastapi import APIRouter
from sqlmodel import Session, select

from api.auth import AdminKey, WorkerKey, create_api_key, redeem_join_token
from api.deps import SessionDep
from api.errors import Conflict, NotFound
from api.schemas import Heartbeat, NodePublic, WorkerJoin, WorkerJoined
from profiles.models import ApiKey, Node, utcnow
from profiles.settings import get_settings

router = APIRouter(tags=["workers"])
FINGERPRINT_COLUMNS = (
    "cpu_model",
    "cores",
    "threads",
    "ram_gb",
    "gpu_name",
    "gpu_count",
    "gpu_mem_gb",
    "mem_bw_gbs",
    "fp32_gflops",
    "bf16_gflops",
)


def queue_name(kind: str, name: str) -> str:
    """Celery queue names: `class.<hardware class>` and `node.<node id>`, in a safe alphabet."""
    return f"{kind}.{re.sub(r'[^A-Za-z0-9._-]', '_', name)}"


def queues_for(node: Node) -> list[str]:
    return [queue_name("class", node.hardware_class), queue_name("node", node.id)]


@router.post("/workers/join", status_code=201, response_model=WorkerJoined)
def join(body: WorkerJoin, session: SessionDep) -> dict:
    token = redeem_join_token(session, body.join_token)
    node_id = body.node_id or f"node-{secrets.token_hex(6)}"
    node = session.get(Node, node_id)
    if node is not None and node.status == "online":
        raise Conflict(f"node {node_id!r} is already online; leave first or pick another id")
    node = node or Node(id=node_id, hardware_class=body.hardware_class)
    node.name, node.hardware_class, node.device_kind = body.name or node_id, body.hardware_class, body.device_kind
    node.fingerprint, node.labels = body.fingerprint, {**node.labels, **token.labels}
    node.price_per_hour, node.status, node.last_heartbeat = body.price_per_hour, "online", utcnow()
    for column in FINGERPRINT_COLUMNS:
        if body.fingerprint.get(column) is not None:
            setattr(node, column, body.fingerprint[column])
    session.add(node)
    for old in session.exec(select(ApiKey).where(ApiKey.node_id == node_id, ApiKey.revoked_at.is_(None))):
        old.revoked_at = utcnow()  # a re-joining node gets a fresh credential; the old one dies
        session.add(old)
    _key, secret = create_api_key(session, "worker", name=f"worker {node_id}", node_id=node_id)
    return {
        "node_id": node_id,
        "worker_key": secret,
        "queues": queues_for(node),
        "heartbeat_interval_s": get_settings().heartbeat_interval_s,
    }


def _own_node(session: Session, key: ApiKey) -> Node:
    node = session.get(Node, key.node_id) if key.node_id else None
    if node is None:
        raise NotFound("this key belongs to no node; join with a token first")
    return node


@router.post("/workers/heartbeat", response_model=NodePublic)
def heartbeat(body: Heartbeat, session: SessionDep, key: WorkerKey) -> Node:
    node = _own_node(session, key)
    node.last_heartbeat, node.status = utcnow(), "online"
    node.labels = {**node.labels, "current_job": body.current_job}
    session.add(node)
    return node


@router.post("/workers/leave", response_model=NodePublic)
def leave(session: SessionDep, key: WorkerKey) -> Node:
    node = _own_node(session, key)
    node.status = "left"
    session.add(node)
    stored_key = session.get(ApiKey, key.id)
    stored_key.revoked_at = utcnow()
    session.add(stored_key)
    return node


@router.get("/workers", response_model=list[NodePublic])
def list_nodes(session: SessionDep, _admin: AdminKey) -> list[Node]:
    mark_lost_nodes(session, get_settings().node_lost_after_s)
    return list(session.exec(select(Node).order_by(Node.created_at)))


def mark_lost_nodes(session: Session, lost_after_s: float) -> list[str]:
    """Online nodes not heard from for ``lost_after_s`` become 'lost'; returns their ids."""
    cutoff = utcnow() - timedelta(seconds=lost_after_s)
    lost = list(session.exec(select(Node).where(Node.status == "online", Node.last_heartbeat < cutoff)))
    for node in lost:
        node.status = "lost"
        session.add(node)
    return [node.id for node in lost]
