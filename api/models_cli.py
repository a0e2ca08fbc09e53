"""`accel-advisor models …`: register a model of your own and queue its profiling, from the shell.

The same functions as POST /v1/models and POST /v1/models/{id}/profile, on the configured store
(as `accel-advisor keys` works): a refusal prints the API's 4xx message and exits with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from api.errors import ApiError
from profiles.db import default_engine, session_scope
from profiles.migrate import upgrade

models_app = typer.Typer(help="Models of your own: register them, queue their profiling.", no_args_is_help=True)


def _refused(exc: ApiError) -> typer.Exit:
    typer.echo(f"refused ({exc.status_code}): {exc.detail}", err=True)
    return typer.Exit(2)


@models_app.command("add")
def models_add(
    path: Annotated[str | None, typer.Argument(help="a checkpoint folder under ACCEL_MODEL_ROOT")] = None,
    config: Annotated[
        Path | None, typer.Option(help="a config.json alone: descriptors for advice, no weights to run")
    ] = None,
    name: Annotated[str | None, typer.Option(help="the name in a config-only model's id")] = None,
) -> None:
    """Register a Hugging Face checkpoint folder (id local:<folder>) or a config.json alone (id config:<name>)."""
    from api.local_models import register_config, register_folder
    from api.schemas import ModelRegister
    from profiles.settings import get_settings

    if (path is None) == (config is None):
        raise typer.BadParameter("give a folder PATH or --config config.json, not both")
    try:
        loaded = json.loads(config.read_text()) if config is not None else None
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{config}: {exc}", param_hint="--config") from None
    try:
        body = ModelRegister.model_validate({"path": path, "config": loaded, "name": name})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    upgrade(default_engine())
    try:
        with session_scope() as session:
            if body.path is not None:
                row = register_folder(session, get_settings().model_root, body.path)
            else:
                assert body.config is not None  # ModelRegister holds exactly one of them
                row = register_config(session, body.config, body.name)
            typer.echo(json.dumps(row.model_dump(mode="json"), indent=2))
    except ApiError as exc:
        raise _refused(exc) from None


@models_app.command("profile")
def models_profile(
    model: Annotated[str, typer.Argument(help="a registered model's id, e.g. local:/models/my-llama")],
    workload: Annotated[str | None, typer.Option(help="the workload as JSON (default: the family's cheapest)")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=8, help="how many of the advisor's best candidates")] = 3,
) -> None:
    """Queue the profiling job that makes the advice for a model sure (its top candidates and the baseline)
    on the pool; when it finishes the advisor retrains. Prints the job."""
    from api.dispatch import dispatch
    from api.routes.models import plan_model_profile
    from api.schemas import ModelProfile

    try:
        body = ModelProfile.model_validate({"workload": json.loads(workload) if workload else None, "top_k": top_k})
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--workload") from None
    upgrade(default_engine())
    try:
        with session_scope() as session:
            public, sends = plan_model_profile(session, model, body)
    except ApiError as exc:
        raise _refused(exc) from None
    dispatch(sends)
    typer.echo(json.dumps(public, indent=2, default=str))
