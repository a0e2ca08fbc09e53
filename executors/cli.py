"""`accel-advisor profile`, `methods`, `families` and `zoo list|build`.

Torch and the models are imported inside the commands: loading the CLI must stay cheap.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

executors_app = typer.Typer(help="Profile acceleration methods on models.")
zoo_app = typer.Typer(help="The model zoo of every family: models trained here or shipped in pip packages.",
                      no_args_is_help=True)  # fmt: skip
console = Console(stderr=True)
log = logging.getLogger(__name__)


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def parse_workloads(text: str):
    """A JSON object, a JSON list of objects, or a grid: `batch=1,4 prompt=32,256 gen=32` for the
    default kind, `<keyword> axis=…` for another (`embed batch=1 seq=128`, `stream requests=16
    load=0.5,4 batch=4,8`, `longctx context=1024,8192`; `accel-advisor families` lists them)."""
    from executors.families import parse_grid, workload_from_json

    text = text.strip()
    try:
        if text.startswith(("{", "[")):
            data = json.loads(text)
            return [workload_from_json(item) for item in (data if isinstance(data, list) else [data])]
        return parse_grid(text)
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None


def _composites(methods: list[str], config: str | None):
    from executors.registry import composite_from_json, default_config, validate_composite

    if config is not None:
        return [composite_from_json(json.loads(config))]
    composites = []
    for name in methods:
        composite = tuple(default_config(part) for part in name.split("+"))
        validate_composite(composite)
        composites.append(composite)
    return composites


@executors_app.command("profile")
def profile(
    models: Annotated[
        list[str], typer.Option("--model", "--models", help="zoo:<name> or local:/path (repeat or comma-separate)")
    ],
    methods: Annotated[
        list[str] | None, typer.Option("--method", "--methods", help="method ids; a+b is a composite")
    ] = None,
    config: Annotated[str | None, typer.Option(help="one method config as JSON (a list for a composite)")] = None,
    workloads: Annotated[
        str, typer.Option("--workload", "--workloads", help="JSON or 'batch=1,4 prompt=32 gen=32'")
    ] = "batch=1 prompt=32 gen=32",
    threads: Annotated[str, typer.Option(help="torch thread counts, e.g. 1,2 (each is a hardware class)")] = "",
    reps: Annotated[int, typer.Option(min=5, help="timed repetitions (at least 5)")] = 5,
    warmup: int = 1,
    device: str = "cpu",
    max_call_seconds: Annotated[
        float | None, typer.Option(help="skip workloads estimated slower than this per call")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the records as JSON lines")] = False,
) -> None:
    """Measure methods against each task's reference, interleaved, and store ProfileRun rows (resumable)."""
    import torch
    from sqlmodel import col, select

    import executors.methods  # noqa: F401  (registers every method)
    from executors.families import kind_of
    from executors.grid import run_grid
    from executors.registry import UnknownMethod
    from profiles.db import default_engine, session_scope
    from profiles.migrate import upgrade
    from profiles.models import ProfileRun, utcnow
    from profiles.transfer import iter_records

    try:
        composites = _composites(_split(methods) or ["baseline"], config)
        workload_list = parse_workloads(workloads)
    except (ValueError, UnknownMethod) as exc:
        raise typer.BadParameter(str(exc)) from None
    thread_counts = [int(t) for t in _split([threads])] or [torch.get_num_threads()]
    engine = default_engine()
    upgrade(engine)
    started = utcnow()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        bar = progress.add_task("profiling", total=None)

        def on_task(done, total, task, added):
            label = kind_of(task.workload).describe(task.workload)
            progress.update(
                bar, total=total, completed=done, description=f"{task.source} {label} t{task.threads} (+{added})"
            )

        totals = run_grid(
            engine,
            _split(models),
            composites,
            workload_list,
            thread_counts,
            reps=reps,
            warmup=warmup,
            device=device,
            max_call_seconds=max_call_seconds,
            on_task=on_task,
        )
    console.print(
        f"{totals['tasks']} tasks: {totals['measured_tasks']} measured, {totals['skipped_tasks']} "
        f"already stored; {totals['added']} records added"
    )
    if as_json:
        with session_scope(engine) as session:
            for record in iter_records(
                session,
                select(ProfileRun).where(col(ProfileRun.created_at) >= started).order_by(col(ProfileRun.created_at)),
            ):
                typer.echo(json.dumps(record, sort_keys=True))


def _show(rows: list[dict], as_json: bool, columns: dict) -> None:
    """JSON for machines, a table for people: `columns` maps a header to a cell formatter."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(format_cell(row) for format_cell in columns.values()))
    Console().print(table)


@executors_app.command("methods")
def methods_command(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the registered methods with their config schema and defaults."""
    import executors.methods  # noqa: F401
    from executors.registry import method_catalogue

    _show(
        method_catalogue(),
        as_json,
        {
            "id": lambda r: r["id"],
            "category": lambda r: r["category"],
            "families": lambda r: ", ".join(r["families"]),
            "lossless": lambda r: "yes" if r["lossless"] else "no",
            "paper": lambda r: r["paper"][:60],
            "config (defaults)": lambda r: ", ".join(f"{k}={v['default']}" for k, v in r["config_schema"].items()),
        },
    )


@executors_app.command("families")
def families_command(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the model families with their workload kinds, references, harnesses, quality metrics and zoo."""
    import executors.methods  # noqa: F401
    from executors.families import families_catalogue

    _show(
        families_catalogue(),
        as_json,
        {
            "family": lambda r: r["name"],
            "kinds (reference)": lambda r: ", ".join(f"{k['name']} ({k['reference']})" for k in r["kinds"]),
            "quality": lambda r: ", ".join(r["quality_metrics"]),
            "zoo": lambda r: ", ".join(e["name"] for e in r["zoo"]),
            "methods": lambda r: str(len(r["methods"])),
        },
    )


@zoo_app.command("list")
def zoo_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the zoo models and whether they are built in the cache."""
    from executors.zoo import list_zoo

    _show(
        list_zoo(),
        as_json,
        {
            "name": lambda r: r["name"],
            "family": lambda r: r["family"],
            "built": lambda r: "yes" if r["built"] else "no",
            "params": lambda r: f"{r['params']:,}" if r["params"] else "?",
            "held-out loss": lambda r: str(r["heldout_loss"] or ""),
            "path": lambda r: r["path"],
        },
    )


@zoo_app.command("build")
def zoo_build(
    names: Annotated[list[str] | None, typer.Argument(help="models to build (default: all)")] = None,
    force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
) -> None:
    """Train (or convert) zoo models into the cache; deterministic for a given corpus and thread count."""
    from executors.zoo import build, zoo_names

    known = zoo_names()
    for name in names or known:
        if name not in known:
            raise typer.BadParameter(f"unknown zoo model {name!r}; known: {', '.join(known)}")
        manifest = build(name, force=force)
        console.print(f"{name}: {manifest['params']:,} params at {manifest['source']}")
