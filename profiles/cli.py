"""`accel-advisor db …` and `accel-advisor profiles …`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from profiles.db import default_engine, session_scope
from profiles.migrate import current_revision, head_revision, upgrade
from profiles.models import ProfileRun
from profiles.transfer import FORMATS, ImportRejected, import_file, iter_records, write_records

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
profiles_app = typer.Typer(help="Stored profile runs: import, export, list.", no_args_is_help=True)
console = Console(stderr=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    engine = default_engine()
    upgrade(engine, revision)
    console.print(f"database at revision [bold]{current_revision(engine)}[/] ({engine.url.render_as_string()})")


@db_app.command("current")
def db_current() -> None:
    """Show the applied and the newest revision."""
    typer.echo(f"current={current_revision(default_engine())} head={head_revision()}")


@profiles_app.command("import")
def profiles_import(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Import a .jsonl/.csv (optionally .gz) file in one transaction; known run ids are skipped."""
    upgrade(default_engine())
    try:
        with session_scope() as session:
            result = import_file(session, path)
    except ImportRejected as exc:
        console.print(f"[red]rejected {path.name}[/]: {exc} — nothing was written")
        raise typer.Exit(2) from None
    console.print(f"imported {result.added} runs, skipped {result.skipped} already stored")


@profiles_app.command("export")
def profiles_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout)")] = None,
) -> None:
    """Export every stored run as self-contained records."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
    with session_scope() as session:
        if output is None:
            count = write_records(iter_records(session), sys.stdout, fmt)
        else:
            with output.open("w", encoding="utf-8", newline="") as handle:
                count = write_records(iter_records(session), handle, fmt)
    console.print(f"exported {count} runs")


@profiles_app.command("list")
def profiles_list(
    method: Annotated[str | None, typer.Option(help="method id")] = None,
    model: Annotated[str | None, typer.Option(help="model id")] = None,
    hardware_class: Annotated[str | None, typer.Option(help="hardware class")] = None,
    limit: int = 20,
) -> None:
    """Show the newest stored runs."""
    statement = select(ProfileRun).order_by(col(ProfileRun.created_at).desc()).limit(limit)
    for column, value in (
        (ProfileRun.method_id, method),
        (ProfileRun.model_id, model),
        (ProfileRun.hardware_class, hardware_class),
    ):
        if value is not None:
            statement = statement.where(column == value)
    table = Table("run", "model", "method", "workload", "hardware", "status", "speed-up", "quality Δ")
    with session_scope() as session:
        for run in session.exec(statement):
            table.add_row(
                run.run_id[:10],
                run.model_id,
                run.method_id,
                run.workload_id,
                run.hardware_class,
                run.status,
                "" if run.speedup is None else f"{run.speedup:.2f}×",
                "" if run.quality_delta is None else f"{run.quality_delta:+.3f}",
            )
    Console().print(table)
