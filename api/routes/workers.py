"""Worker nodes join with a token, heartbeat, and leave; silent nodes are marked lost; admins remove nodes."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter
from sqlmodel import Session, col, func, select

from api.auth import AdminKey, WorkerKey, create_api_key, forget_verified_keys, redeem_join_token, verify_api_key
from api.deps import SessionDep
from api.dispatch import dispatch
from api.errors import Conflict, Forbidden, NotFound
from api.jobs import fail_items_for_node, queue_name, requeue_running
from api.schemas import Heartbeat, NodePublic, NodeRemoved, WorkerJoin, WorkerJoined
from profiles.db import session_scope
from profiles.models import ApiKey, Node, ProfileRun, utcnow
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
__all__ = ["router", "queue_name", "mark_lost_nodes"]


def queues_for(node: Node) -> list[str]:
    return [queue_name("class", node.hardware_class), queue_name("node", node.id)]


def _takes_over(session: Session, node: Node, previous_key: str | None) -> bool:
    """A restarted worker proves it is this node with the node's last key (the old process is gone or dying)."""
    key = verify_api_key(session, previous_key) if previous_key else None
    return key is not None and key.scope == "worker" and key.node_id == node.id


def _revoke_node_keys(session: Session, node_id: str) -> None:
    for old in session.exec(select(ApiKey).where(ApiKey.node_id == node_id, col(ApiKey.revoked_at).is_(None))):
        old.revoked_at = utcnow()
        session.add(old)
    forget_verified_keys(session)


@router.post("/workers/join", status_code=201, response_model=WorkerJoined)
def join(body: WorkerJoin) -> dict:
    with session_scope() as session:
        token = redeem_join_token(session, body.join_token)
        node_id = body.node_id or f"node-{secrets.token_hex(6)}"
        node = session.get(Node, node_id)
        if node is not None and node.status == "removed":
            raise Conflict(f"node {node_id!r} was removed by an admin; join under another id")
        if node is not None and node.status == "online" and not _takes_over(session, node, body.previous_key):
            raise Conflict(f"node {node_id!r} is already online; leave first or pick another id")
        # A joining process runs nothing yet: whatever the store says runs on this node was its predecessor's.
        resend = requeue_running(session, [node_id], reason="node restarted")
        node = node or Node(id=node_id, hardware_class=body.hardware_class)
        fingerprint = body.fingerprint.model_dump(exclude_none=True)
        node.name, node.hardware_class, node.device_kind = body.name or node_id, body.hardware_class, body.device_kind
        node.fingerprint, node.labels = fingerprint, {**node.labels, **token.labels}
        node.price_per_hour, node.status = body.price_per_hour, "online"
        node.last_heartbeat = node.last_work_at = utcnow()
        node.current_item = None
        for column in FINGERPRINT_COLUMNS:
            if fingerprint.get(column) is not None:
                setattr(node, column, fingerprint[column])
        session.add(node)
        _revoke_node_keys(session, node_id)  # a re-joining node gets a fresh credential; the old one dies
        _key, secret = create_api_key(session, "worker", name=f"worker {node_id}", node_id=node_id)
        answer = {
            "node_id": node_id,
            "worker_key": secret,
            "queues": queues_for(node),
            "heartbeat_interval_s": get_settings().heartbeat_interval_s,
        }
    dispatch(resend)
    return answer


def own_node(session: Session, key: ApiKey) -> Node:
    """The node a worker key is bound to; a key bound to none (made by hand) may not act as a worker."""
    node = session.get(Node, key.node_id) if key.node_id else None
    if node is None:
        raise Forbidden("this key belongs to no node; workers get their key by joining with a token")
    return node


@router.post("/workers/heartbeat", response_model=NodePublic)
def heartbeat(body: Heartbeat, session: SessionDep, key: WorkerKey) -> Node:
    node = own_node(session, key)
    if node.status == "removed":
        raise NotFound(f"node {node.id} was removed by an admin")
    node.last_heartbeat, node.status, node.current_item = utcnow(), "online", body.current_item
    if node.labels.get("current_job") != body.current_job:
        node.labels = {**node.labels, "current_job": body.current_job}
    session.add(node)
    return node


@router.post("/workers/leave", response_model=NodePublic)
def leave(key: WorkerKey) -> Node:
    with session_scope() as session:
        node = own_node(session, key)
        node.status, node.current_item = ("left" if node.status != "removed" else "removed"), None
        session.add(node)
        stored_key = session.get_one(ApiKey, key.id)
        stored_key.revoked_at = utcnow()
        session.add(stored_key)
        forget_verified_keys(session)
        resend = requeue_running(session, [node.id], reason="node left")
        session.flush()
        session.expunge(node)
    dispatch(resend)
    return node


@router.get("/workers", response_model=list[NodePublic])
def list_nodes(session: SessionDep, _admin: AdminKey) -> list[Node]:
    mark_lost_nodes(session, get_settings().node_lost_after_s)
    return list(session.exec(select(Node).where(Node.status != "removed").order_by(col(Node.created_at))))


@router.delete("/workers/{node_id}", response_model=NodeRemoved)
def remove_node(node_id: str, _admin: AdminKey) -> dict:
    """Revokes the node's keys, re-queues what it was running and fails what only it could run.

    A node with stored profiles stays as history (status "removed", hidden from the pool);
    one without is deleted.
    """
    with session_scope() as session:
        node = session.get(Node, node_id)
        if node is None or node.status == "removed":
            raise NotFound(f"no node {node_id!r}")
        _revoke_node_keys(session, node_id)
        resend = requeue_running(session, [node_id], reason="node removed")
        failed = fail_items_for_node(session, node_id, f"node {node_id} was removed by an admin")
        measured = session.exec(select(func.count()).select_from(ProfileRun).where(ProfileRun.node_id == node_id)).one()
        if measured:
            node.status, node.current_item = "removed", None
            session.add(node)
        else:
            session.delete(node)
        answer = {"id": node_id, "status": "removed" if measured else "deleted", "requeued": len(resend)}
        answer["failed"] = failed
    dispatch(resend)
    return answer


def mark_lost_nodes(session: Session, lost_after_s: float) -> list[str]:
    """Online nodes not heard from for ``lost_after_s`` become 'lost'; returns their ids."""
    cutoff = utcnow() - timedelta(seconds=lost_after_s)
    lost = list(session.exec(select(Node).where(Node.status == "online", col(Node.last_heartbeat) < cutoff)))
    for node in lost:
        node.status = "lost"
        session.add(node)
    return [node.id for node in lost]
