"""The `accel-advisor` command. Each package contributes its own sub-commands."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

from advisor.cli import advisor_app
from api import __version__
from api.access_cli import keys_app, tokens_app
from api.models_cli import models_app
from executors.cli import executors_app, zoo_app
from profiles.cli import db_app, profiles_app

app = typer.Typer(help="accel-advisor: choose, predict and run model-acceleration methods.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(profiles_app, name="profiles")
app.add_typer(keys_app, name="keys")
app.add_typer(tokens_app, name="tokens")
app.add_typer(advisor_app, name="advisor")
app.add_typer(models_app, name="models")
app.add_typer(executors_app)  # no name: `profile` and `methods` are top-level commands
app.add_typer(zoo_app, name="zoo")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=Console(stderr=True))],
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its per-step chatter is not news


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


@app.command()
def worker(
    server: str = typer.Option(..., help="the API's base URL, e.g. http://127.0.0.1:8000"),
    join_token: str = typer.Option(..., envvar="ACCEL_JOIN_TOKEN", help="from `accel-advisor tokens create`"),
    threads: int = typer.Option(None, min=1, help="torch threads (a different count is a different hardware class)"),
    device: str = typer.Option("cpu", help="cpu or cuda[:n]"),
    pool: str = typer.Option("solo", help="Celery pool: solo (one measurement at a time) or threads"),
    name: str = typer.Option("", help="a label for people"),
    node_id: str = typer.Option(None, help="default: derived from the hardware fingerprint and host"),
    parent_pid: int = typer.Option(None, hidden=True, help="exit when this process (the embedded serve) is gone"),
) -> None:
    """Join the pool and run profiling jobs and runs from this node's queues."""
    from executors.worker import run_worker

    run_worker(
        server, join_token, threads=threads, device=device, pool=pool, name=name, node_id=node_id, parent_pid=parent_pid
    )


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default: ACCEL_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default: ACCEL_PORT or 8000)"),
    local_worker: bool = typer.Option(None, help="start a worker on this machine (default: on in embedded mode)"),
) -> None:
    """Start the service: API, admin UI and (embedded default) a local worker on a SQLite store."""
    import sys

    import uvicorn
    from sqlalchemy.engine import make_url

    from api.embedded import LocalWorker, prepare_store
    from profiles.db import default_engine
    from profiles.migrate import upgrade
    from profiles.settings import get_settings

    settings = get_settings()
    settings.check_server_config()
    settings.ensure_dirs()
    upgrade(default_engine())
    admin_key = prepare_store(settings)
    host, port = host or settings.host, port or settings.port
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    store = make_url(settings.database_url).render_as_string(hide_password=True)
    log = logging.getLogger(__name__)
    log.info("accel-advisor %s on %s (docs: %s/docs; store: %s)", __version__, url, url, store)
    key_file = settings.data_dir / "admin_key"
    if admin_key and sys.stdout.isatty():  # a terminal, not a log file; and echoed whole, for copy-paste
        typer.echo(f"first admin key (also kept in {key_file}, mode 0600):\n{admin_key}")
    elif admin_key:
        log.info("created the first admin key; read it from %s (mode 0600)", key_file)
    worker = None
    if local_worker if local_worker is not None else settings.mode != "distributed":
        worker = LocalWorker(settings, url).start()
    try:
        uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level="info")
    finally:
        if worker is not None:
            worker.stop()
