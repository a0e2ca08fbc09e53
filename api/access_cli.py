"""`accel-advisor keys …` and `accel-advisor tokens …`: credentials managed from the shell."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.auth import SCOPES, create_api_key, create_join_token, list_api_keys, revoke_api_key
from api.errors import ApiError
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade

keys_app = typer.Typer(help="Scoped API keys (stored hashed; shown once).", no_args_is_help=True)
tokens_app = typer.Typer(help="Expiring join tokens for worker nodes.", no_args_is_help=True)
console = Console()


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help=f"one of {', '.join(SCOPES)}")],
    name: Annotated[str, typer.Option(help="a label for people")] = "",
) -> None:
    """Create a key and print it once."""
    upgrade(default_engine())
    try:
        with session_scope() as session:
            row, key = create_api_key(session, scope, name)
            key_id = row.id
    except ApiError as exc:
        raise typer.BadParameter(exc.detail, param_hint="--scope") from None
    console.print(f"key id {key_id} ({scope}); store this secret now, it is not shown again:")
    typer.echo(key)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id."""
    try:
        with session_scope() as session:
            revoke_api_key(session, key_id)
    except ApiError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(2) from None
    console.print(f"revoked {key_id}")


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    table = Table("id", "scope", "name", "node", "created", "revoked")
    with session_scope() as session:
        for row in list_api_keys(session):
            table.add_row(
                row.id,
                row.scope,
                row.name,
                row.node_id or "",
                f"{row.created_at:%Y-%m-%d %H:%M}",
                "" if row.revoked_at is None else f"{row.revoked_at:%Y-%m-%d %H:%M}",
            )
    console.print(table)


@tokens_app.command("create")
def tokens_create(
    ttl_hours: Annotated[float, typer.Option(min=0.01, help="lifetime in hours")] = 24.0,
    max_uses: Annotated[int | None, typer.Option(min=1, help="how many workers may join with it")] = None,
    note: str = "",
) -> None:
    """Create a join token and print it once."""
    upgrade(default_engine())
    with session_scope() as session:
        row, token = create_join_token(session, timedelta(hours=ttl_hours), max_uses, note)
        expires = row.expires_at
    console.print(f"join token valid until {expires:%Y-%m-%d %H:%M} UTC:")
    typer.echo(token)
