"""`cds serve`: the CDS Hooks HTTP service under uvicorn (owned by the service work)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

# Options are passed to worker processes through these variables (uvicorn imports the
# app factory by name in each worker, so the values must travel in the environment).
_ENV = {
    "rules": "OSTEOHOOKS_RULES",
    "as_of": "OSTEOHOOKS_AS_OF",
    "reload_rules": "OSTEOHOOKS_RELOAD_RULES",
}


#: how long uvicorn waits for a new worker (`--workers N`, SIGHUP restarts) to be ready
WORKER_READY_SECONDS = 120


def app_factory() -> Any:
    """uvicorn `--factory` target: settings from the environment (and settings file)."""
    from cds.api import create_app
    from cds.api.logs import configure
    from cds.settings import Settings

    settings = Settings()
    configure(settings.log_level)
    return create_app(settings)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    rules: Annotated[
        Path | None,
        typer.Option(help="Rules folder (default: OSTEOHOOKS_RULES or the bundled rules/)."),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Fix 'today' (ISO date) for reproducible answers.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    reload_rules: Annotated[
        bool,
        typer.Option(
            "--reload-rules",
            help="Poll the rules folder and reload on change (SIGHUP always reloads).",
        ),
    ] = False,
) -> None:
    """Start the CDS Hooks 2.0.1 service (discovery at /cds-services)."""
    _survive_sighup_while_starting()
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # before prometheus-client is imported: each worker writes its metrics there and
        # /metrics on any worker adds them all up (cds.metrics)
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="osteohooks-metrics-")
    import uvicorn

    from cds.api.logs import configure
    from cds.api.ruleset import rule_errors
    from cds.settings import Settings

    if as_of is not None:
        try:
            date.fromisoformat(as_of)
        except ValueError:
            raise typer.BadParameter(f"{as_of!r} is not an ISO date (YYYY-MM-DD)") from None
        os.environ[_ENV["as_of"]] = as_of
    if rules is not None:
        os.environ[_ENV["rules"]] = str(rules.resolve())
    if reload_rules:
        os.environ[_ENV["reload_rules"]] = "true"
    try:
        settings = Settings()
    except Exception as exc:
        typer.echo(f"error: configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    configure(settings.log_level)
    from cds.api import create_app

    try:
        application = create_app(settings)
    except Exception as exc:  # bad rules or configuration: a clear message, exit 2
        typer.echo("error: cannot start the service:", err=True)
        for line in rule_errors(exc):
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(2) from None
    if settings.auth == "none":
        typer.echo(
            "WARNING: OSTEOHOOKS_AUTH=none: the service accepts calls WITHOUT authentication. "
            "Development only.",
            err=True,
        )
    target: Any = application
    if workers > 1:
        # each worker builds its own app (own store connection, own rule set)
        application.state.service.store.close()
        target = "cds.cli.serve_cmd:app_factory"
    from cds.api.nodelay import PROTOCOL

    uvicorn.run(
        target,
        factory=workers > 1,
        http=PROTOCOL,  # TCP_NODELAY on every connection (lost with --workers: cds.api.nodelay)
        host=host,
        port=port,
        workers=workers,
        # a new worker compiles the rule set (seconds; ~14 s for 5,000 rules) and starts its
        # big-body pool before it is ready: uvicorn's 5 s made SIGHUP restarts give up
        timeout_worker_healthcheck=WORKER_READY_SECONDS,
        log_config=None,
        access_log=False,
        server_header=False,
    )


def _survive_sighup_while_starting() -> None:
    """SIGHUP's default action ends the process: until the service installs its reload
    handler (or uvicorn's supervisor its own), a SIGHUP is only noted: the rules being
    loaded are read from the folder as it is now anyway."""
    import signal
    import sys

    if hasattr(signal, "SIGHUP"):

        def noted(_signum: int, _frame: object) -> None:
            sys.stderr.write("SIGHUP during start-up: the rules are being loaded already\n")

        signal.signal(signal.SIGHUP, noted)


def register(app: typer.Typer) -> None:
    """Add `serve` to the top-level app."""
    app.command("serve")(serve)
